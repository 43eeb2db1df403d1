"""Hidden states of the layers a checkpoint shares with its base: computed once, reused by both.

The default recipe trains only the top layers (`training.trainable_top_layers`), so a checkpoint's
embeddings and lower layers are bit for bit its base's, and the states those layers compute for an
evaluation text are the same for both models. Scoring stores each text's states at the split layer;
a model whose embeddings and lower layers hash to the same content (any checkpoint of the recipe,
whichever folder or partition it lies in) starts its forward pass there and runs only its own top
layers: about half of a checkpoint's encoding at the default split. The embeddings are the same
bit for bit: a text's tokens never attend to a batch's padding, whatever the padding holds (test:
tests/test_scoring.py compares them with a full forward pass).

Stored under `root/<shared content>-S<split>-L<length>-<precision>/` as segments: each encode call
that computed new states writes `<n>.states.npy` (every text's tokens, one row each) and then
`<n>.index.npz` (text keys and their first row); a segment without its index was never finished and
is not read. A text is keyed by its token ids, so a tokenizer that cuts or splits differently never
reads states it did not produce."""

from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from .artifact_io import atomic_path


def _transformer(model: SentenceTransformer):
    """The Hugging Face model inside `model` when it has the embeddings + encoder.layer layout
    (BERT, XLM-RoBERTa and their kin) this module can split; else None."""
    auto_model = getattr(model[0], "auto_model", None)
    layers = getattr(getattr(auto_model, "encoder", None), "layer", None)
    if auto_model is None or not hasattr(auto_model, "embeddings") or not isinstance(layers, torch.nn.ModuleList):
        return None
    return auto_model


def split_layer(model: SentenceTransformer, trained_top_layers: int | None) -> int | None:
    """How many lower layers a recipe that trains only the top `trained_top_layers` leaves as the
    base had them (None: it trains them all, or the architecture cannot be split)."""
    transformer = _transformer(model)
    if trained_top_layers is None or transformer is None:
        return None
    split = len(transformer.encoder.layer) - int(trained_top_layers)
    return split if split > 0 else None


def shared_content(model: SentenceTransformer, split: int) -> str:
    """A hash of everything the states at `split` depend on: the architecture, the embeddings and
    the layers below `split` (names, dtypes, shapes and values)."""
    transformer = _transformer(model)
    digest = hashlib.sha256(type(transformer).__name__.encode())
    modules = [("embeddings", transformer.embeddings)] + [(f"layer.{i}", transformer.encoder.layer[i]) for i in range(split)]
    for prefix, module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(f"{prefix}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


class _GivenStates(torch.nn.Module):
    """Stands in for the embeddings module: returns the stored states of the batch."""

    def __init__(self, states: torch.Tensor):
        super().__init__()
        self.states = states

    def forward(self, **_) -> torch.Tensor:
        return self.states


class SharedLayerStates:
    """The stored states at `split` of every model that shares `model`'s embeddings and lower layers,
    at one evaluation length and precision."""

    def __init__(self, root: str | Path, model: SentenceTransformer, split: int, max_length: int, precision: str):
        self.split = split
        self.content = shared_content(model, split)
        self.directory = Path(root) / f"{self.content}-S{split}-L{int(max_length)}-{precision}"
        self._where: dict[bytes, tuple[np.ndarray, int]] = {}  # key -> (states array, first row)
        self._new: dict[bytes, np.ndarray] = {}
        self.counts = {"reused": 0, "stored": 0}
        for index in sorted(self.directory.glob("*.index.npz")):
            states = np.load(index.with_name(index.name.replace(".index.npz", ".states.npy")), mmap_mode="r")
            with np.load(index) as table:
                for key, row in zip(table["keys"], table["rows"]):
                    self._where.setdefault(key.tobytes(), (states, int(row)))

    @staticmethod
    def keys_of(features: dict[str, torch.Tensor]) -> list[bytes]:
        """Each row's key: a hash of its token ids (padding excluded)."""
        ids, mask = features["input_ids"].cpu(), features["attention_mask"].cpu().bool()
        return [hashlib.sha1(ids[row][mask[row]].numpy().astype(np.int64).tobytes()).digest()[:16] for row in range(len(ids))]

    def embed_batch(self, model: SentenceTransformer, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """`encoder.embed_batch` for one tokenized batch: from the stored states when every text of
        the batch has them, else a full forward pass that stores the states of the texts without."""
        from .encoder import embed_batch

        keys = self.keys_of(features)
        known = [key in self._where or key in self._new for key in keys]
        if all(known):
            with self._starting_at_split(model, self._padded(keys, features["attention_mask"], model.device)):
                embeddings = embed_batch(model, features)
            self.counts["reused"] += len(keys)
            return embeddings
        captured: list[torch.Tensor] = []
        layer = _transformer(model).encoder.layer[self.split - 1]
        handle = layer.register_forward_hook(
            lambda _module, _inputs, output: captured.append(output[0] if isinstance(output, tuple) else output))
        try:
            embeddings = embed_batch(model, features)
        finally:
            handle.remove()
        states, mask = captured[-1].float().cpu().numpy(), features["attention_mask"].cpu().bool().numpy()
        for row, (key, was_known) in enumerate(zip(keys, known)):
            if not was_known:
                self._new[key] = states[row][mask[row]]  # the text's own tokens, whichever side the padding is on
        self.counts["stored"] += known.count(False)
        return embeddings

    def _states(self, key: bytes, length: int) -> np.ndarray:
        if key in self._new:
            return self._new[key]
        states, first = self._where[key]
        return states[first : first + length]

    def _padded(self, keys: list[bytes], attention_mask: torch.Tensor, device) -> torch.Tensor:
        """The batch's stored states at its tokens' positions, zeros at the padding (which no token attends to)."""
        mask = attention_mask.cpu().bool().numpy()
        padded = None
        for row, key in enumerate(keys):
            states = self._states(key, int(mask[row].sum()))
            if padded is None:
                padded = np.zeros((*mask.shape, states.shape[1]), dtype=np.float32)
            padded[row][mask[row]] = states
        return torch.from_numpy(padded).to(device)

    @contextmanager
    def _starting_at_split(self, model: SentenceTransformer, states: torch.Tensor):
        """Runs `model` from the split: its embeddings return `states`, only its top layers run."""
        transformer = _transformer(model)
        embeddings, layers = transformer.embeddings, transformer.encoder.layer
        transformer.embeddings, transformer.encoder.layer = _GivenStates(states), layers[self.split :]
        try:
            yield
        finally:
            transformer.embeddings, transformer.encoder.layer = embeddings, layers

    def save(self) -> None:
        """Writes the states computed since the last save as one segment (states first, index last)."""
        if not self._new:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        keys = list(self._new)
        lengths = np.array([len(self._new[key]) for key in keys], dtype=np.int64)
        rows = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        states_path = self.directory / f"{name}.states.npy"
        with atomic_path(states_path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.concatenate([self._new[key] for key in keys]))
        with atomic_path(self.directory / f"{name}.index.npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, keys=np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16), rows=rows)
        states = np.load(states_path, mmap_mode="r")
        for key, first in zip(keys, rows):
            self._where.setdefault(key, (states, int(first)))
        self._new.clear()
