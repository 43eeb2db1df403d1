"""Each model's text embeddings on disk, keyed by what makes them valid.

A model is identified by the content of its checkpoint (`model_identity`: a hash of its weights,
config and tokenizer files), not by its path: a retrained checkpoint in the same folder is another
model, and a promoted copy of a checkpoint is the same one. An embedding is keyed by that identity,
the encoding settings (maximum length, precision) and the exact text with its prompt. Scoring,
indexing and re-scoring therefore never reuse embeddings of other weights, and never encode the
same text twice for one model (the base model's corpus is encoded once for every partition)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .artifact_io import atomic_directory

# Files of a checkpoint folder that do not change what the model computes.
_NOT_THE_MODEL = {"README.md", "training_log.json", "current.json", "current_per_query.parquet", "current_training_pairs.parquet"}


def model_identity(directory: str | Path) -> str:
    """A content hash of a sentence-transformers folder: weights, configs, tokenizer and modules."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model folder {directory} does not exist")
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory)
        if relative.name in _NOT_THE_MODEL or any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(relative.as_posix().encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def text_key(prompt: str, text: str) -> bytes:
    return hashlib.sha1(f"{prompt}\x1f{text}".encode("utf-8")).digest()[:16]


class EmbeddingStore:
    """The embeddings one model (identity + encoding settings) computed, as `keys.npy` (16-byte text
    keys, one uint8 row each) and `vectors.npy` under `root/<identity>-<settings>/`. `lookup` answers from memory;
    `add` then `save` extends the folder atomically (a crash leaves the previous complete state)."""

    def __init__(self, root: str | Path, identity: str, max_length: int, precision: str):
        self.settings = {"model_identity": identity, "max_length": int(max_length), "precision": precision}
        self.directory = Path(root) / f"{identity}-L{int(max_length)}-{precision}"
        self._keys: list[bytes] = []
        self._vectors: list[np.ndarray] = []
        self._row: dict[bytes, int] = {}
        self._saved_rows = 0
        if (self.directory / "vectors.npy").exists():
            keys = np.load(self.directory / "keys.npy")  # (n, 16) bytes: numpy's "S" strings would drop trailing zero bytes
            vectors = np.load(self.directory / "vectors.npy")
            self._keys, self._vectors = [row.tobytes() for row in keys], [vectors]
            self._row = {key: row for row, key in enumerate(self._keys)}
            self._saved_rows = len(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def _matrix(self) -> np.ndarray:
        if len(self._vectors) > 1:
            self._vectors = [np.concatenate(self._vectors)]
        return self._vectors[0] if self._vectors else np.zeros((0, 0), dtype=np.float32)

    def lookup(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(rows of `keys` that are stored, as a boolean mask; their vectors in that order)."""
        rows = np.array([self._row.get(key, -1) for key in keys], dtype=np.int64)
        found = rows >= 0
        return found, self._matrix()[rows[found]] if found.any() else np.zeros((0, 0), dtype=np.float32)

    def add(self, keys: list[bytes], vectors: np.ndarray) -> None:
        for key in keys:
            if key in self._row:
                raise ValueError("an embedding is stored once per text and prompt")
        start = len(self._keys)
        self._keys.extend(keys)
        self._vectors.append(np.asarray(vectors, dtype=np.float32))
        self._row.update({key: start + i for i, key in enumerate(keys)})

    def save(self, min_new_rows: int = 1) -> None:
        """Writes the store if at least `min_new_rows` embeddings were added since the last write."""
        if len(self._keys) - self._saved_rows < max(1, min_new_rows):
            return
        with atomic_directory(self.directory) as tmp:
            np.save(tmp / "keys.npy", np.frombuffer(b"".join(self._keys), dtype=np.uint8).reshape(len(self._keys), 16))
            np.save(tmp / "vectors.npy", self._matrix())
            (tmp / "settings.json").write_text(json.dumps({**self.settings, "texts": len(self._keys)}, indent=2))
        self._saved_rows = len(self._keys)
