"""Training-step throughput and MFU (model FLOPs utilisation) of a ~300M-class encoder shape.

The model is xlm-roberta-base's architecture (12 layers, hidden 768, vocabulary 250,002:
~278M parameters) with random weights, so it runs offline; throughput does not depend on the
weights. Each step is the pipeline's own training step (retrofit_pipeline.trainer.
training_step: InfoNCE, clipping, fused AdamW) on `--batch-size` queries, their positives and `--negatives` hard
negatives per query, every text padded/truncated to `--seq-len` tokens, bf16 autocast and
gradient checkpointing on CUDA (the pipeline's GPU defaults).

MFU = model FLOPs per second / the device's peak dense bf16 FLOPs, with the usual convention
(PaLM, appendix B): 6 x non-embedding parameters + 12 x layers x hidden x seq_len FLOPs per
training token; recomputation for gradient checkpointing is not counted as useful work.

    .venv/bin/python bench/train_mfu.py --device cuda [--batch-size 64 --negatives 7 --seq-len 256]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1}


def build_xlmr_base_shape(directory: Path, texts: list[str], layers: int, hidden: int) -> Path:
    """A random-init XLM-R-shaped model with a WordPiece tokenizer (xlm-r's own needs a download)."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from retrofit_pipeline.tiny_model import build_tiny_encoder

    build_tiny_encoder(texts, directory)  # writes the tokenizer (and a tiny BERT we overwrite)
    config = XLMRobertaConfig(vocab_size=250_002, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                              intermediate_size=4 * hidden, max_position_embeddings=514, pad_token_id=0)
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(directory, safe_serialization=True)
    return directory


def _sdpa_backend_that_runs(device: str, batch: int, heads: int, seq_len: int, head_dim: int) -> dict:
    """The kernel scaled_dot_product_attention dispatches to for this encoder's attention call
    (bf16, a padding mask as BERT/XLM-R pass one, with and without it): torch tries its kernels in
    priority order, so the first one that accepts the call when it is the only one allowed is the one
    that ran. Flash attention takes no arbitrary mask, so a padded batch falls back to another."""
    if not device.startswith("cuda"):
        return {}
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    q = torch.randn(batch, heads, seq_len, head_dim, device=device, dtype=torch.bfloat16)
    mask = torch.ones(batch, 1, 1, seq_len, device=device, dtype=torch.bool)
    mask[:, :, :, seq_len // 2 :] = False  # half the positions are padding
    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    found = {}
    for label, attn_mask in (("with_padding_mask", mask), ("without_mask", None)):
        for backend in order:
            try:
                with sdpa_kernel([backend]):
                    scaled_dot_product_attention(q, q, q, attn_mask=attn_mask)
                found[label] = backend.name.lower()
                break
            except RuntimeError:
                continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--mini-batch-size", type=int, default=None)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak dense bf16 TFLOPs (known GPUs are detected)")
    parser.add_argument("--checkpointing", choices=("on", "off"), default="off",
                        help="gradient checkpointing (the pipeline's 'auto' turns it on only when a step runs out of memory)")
    parser.add_argument("--compile-layers", action="store_true", help="torch.compile each transformer layer (training.compile_layers)")
    parser.add_argument("--freeze-embeddings", action="store_true", help="no gradient or AdamW state for the 250k-row embedding matrix")
    args = parser.parse_args()

    from retrofit_pipeline.encoder import load_encoder, resolve_device
    from retrofit_pipeline.losses import false_negative_mask
    from retrofit_pipeline.trainer import make_optimizer, training_step
    from retrofit_pipeline.training import TrainingSettings

    device = resolve_device(args.device)
    words = "retrieval encoder passage query multilingual language model training negative index".split()
    # Long enough for --seq-len tokens; every text differs so no candidate is masked as a duplicate.
    texts = [" ".join(words[(i + j) % len(words)] + str(i % 97) for j in range(args.seq_len)) for i in range(args.batch_size * (2 + args.negatives))]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_xlmr_base_shape(Path(tmp) / "xlmr-base-shape", texts, args.layers, args.hidden)
        model = load_encoder(str(model_dir), device=device, max_length=args.seq_len, query_prefix="", passage_prefix="")
    from retrofit_pipeline.weights import compile_layers, enable_gradient_checkpointing, freeze_token_embeddings

    if args.checkpointing == "on":
        enable_gradient_checkpointing(model)
    if args.freeze_embeddings:
        freeze_token_embeddings(model)
    if args.compile_layers:
        compile_layers(model)
    model.train()
    settings = TrainingSettings(batch_size=args.batch_size, max_query_length=args.seq_len, max_passage_length=args.seq_len,
                                query_prefix="", passage_prefix="", mini_batch_size=args.mini_batch_size, device=device,
                                learning_rate=1e-5, length_bucket_size=None)
    optimizer = make_optimizer(model, settings)
    queries = texts[: args.batch_size]
    passages = texts[args.batch_size :]
    mask = false_negative_mask([[p] for p in passages[: args.batch_size]], passages).to(device)
    labels = torch.arange(args.batch_size, device=device)
    times = []
    for _ in range(args.warmup + args.steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        training_step(model, optimizer, queries, passages, mask, labels, settings, device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    step_seconds = sum(times[args.warmup :]) / args.steps
    tokens_per_step = len(texts) * args.seq_len
    backbone = model[0].auto_model
    embedding_params = sum(p.numel() for p in backbone.embeddings.parameters())
    total_params = sum(p.numel() for p in backbone.parameters())
    flops_per_token = 6 * (total_params - embedding_params) + 12 * args.layers * args.hidden * args.seq_len
    achieved_tflops = flops_per_token * tokens_per_step / step_seconds / 1e12
    peak = args.peak_tflops
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    if peak is None:
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    print(json.dumps({
        "benchmark": "training step of an xlm-roberta-base-shaped encoder",
        "device": name, "torch": torch.__version__,
        "parameters": total_params, "non_embedding_parameters": total_params - embedding_params,
        "batch_size": args.batch_size, "negatives_per_query": args.negatives, "seq_len": args.seq_len,
        "texts_per_step": len(texts), "gradient_checkpointing": args.checkpointing, "compile_layers": args.compile_layers,
        "freeze_embeddings": args.freeze_embeddings, "sdpa_kernel": _sdpa_backend_that_runs(device, min(len(texts), 64), args.hidden // 64, args.seq_len, 64), "precision": "bf16" if device.startswith("cuda") else "fp32",
        "samples_per_second": round(args.batch_size / step_seconds, 2),
        "tokens_per_second": round(tokens_per_step / step_seconds),
        "model_tflops_per_second": round(achieved_tflops, 2),
        "mfu": round(achieved_tflops / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
    }, indent=2))


if __name__ == "__main__":
    main()
