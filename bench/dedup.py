"""Deduplication and leakage filtering at scale: the cleaning step (clean_pool: exact duplicates,
MinHash near-duplicates with LSH, evaluation leakage exact + near) on N pairs, against the
implementation this project had before (pure-Python MinHash, one numpy call per text, modulo a
Mersenne prime), measured in the same run, each in its own fresh process (peak RSS is its own).

The pairs: the default corpus's raw pairs (run the default pipeline once), grown to N by the
deterministic splice bench/mining.py uses for passages (query i and positive i of a synthetic row
are halves of two real rows', drawn by numpy's default_rng(0)), so near-duplicates and leakage
occur at the real data's rate. The evaluation set: the default's. The previous implementation is
timed on a prefix (--baseline-rows, default 100k) and its per-row cost is reported; its time at N
is extrapolated linearly (it is linear in the rows: one signature per text, LSH buckets in dicts).

    .venv/bin/python bench/dedup.py [--rows 1000000] [--baseline-rows 100000]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from retrofit_pipeline.config import REPO_ROOT

EXPERIMENT = REPO_ROOT / "artifacts" / "default"


def grown_pairs(rows: int) -> pd.DataFrame:
    pairs = pd.read_parquet(EXPERIMENT / "raw" / "pairs.parquet")
    if rows <= len(pairs):
        return pairs.head(rows).reset_index(drop=True)
    rng = np.random.default_rng(0)
    extra = rows - len(pairs)
    a, b = rng.integers(0, len(pairs), size=(2, extra))

    def splice(left: pd.Series, right: pd.Series) -> list[str]:
        out = []
        for x, y in zip(left, right):
            xw, yw = x.split(), y.split()
            out.append(" ".join(xw[: max(1, len(xw) // 2)] + yw[len(yw) // 2:]))
        return out

    synthetic = pairs.iloc[a].reset_index(drop=True).copy()
    synthetic["query"] = splice(pairs["query"].iloc[a], pairs["query"].iloc[b])
    synthetic["positive"] = splice(pairs["positive"].iloc[a], pairs["positive"].iloc[b])
    synthetic["pair_id"] = [f"synthetic:{i}" for i in range(extra)]
    return pd.concat([pairs, synthetic], ignore_index=True)


class PreviousMinHasher:
    """The implementation this project shipped before (kept here as the benchmark's reference)."""

    def __init__(self, num_perm: int = 64, shingle_size: int = 5, seed: int = 13):
        rng = np.random.default_rng(seed)
        self.prime = (1 << 61) - 1
        self.a = rng.integers(1, self.prime, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, self.prime, size=num_perm, dtype=np.uint64)
        self.num_perm, self.shingle_size = num_perm, shingle_size

    def signature(self, text: str) -> np.ndarray:
        import zlib

        from retrofit_pipeline.dedup import normalize_text

        normalized = normalize_text(text).replace(" ", "")
        n = self.shingle_size
        if len(normalized) <= n:
            shingles = np.array([zlib.crc32(normalized.encode("utf-8"))], dtype=np.uint64)
        else:
            grams = {normalized[i : i + n] for i in range(len(normalized) - n + 1)}
            shingles = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams))
        return ((np.outer(shingles, self.a) + self.b) % self.prime).min(axis=0)

    def signatures(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.signature(t) for t in texts]) if texts else np.zeros((0, self.num_perm), np.uint64)


def previous_near_duplicate_groups(signatures: np.ndarray, threshold: float, bands: int = 16) -> list[int]:
    """The previous LSH grouping: Python dict buckets, one row at a time."""
    rows_per_band = signatures.shape[1] // bands
    buckets: dict[tuple, list[int]] = defaultdict(list)
    representative = list(range(len(signatures)))
    for i, sig in enumerate(signatures):
        candidates: set[int] = set()
        for band in range(bands):
            key = (band, sig[band * rows_per_band : (band + 1) * rows_per_band].tobytes())
            candidates.update(buckets[key])
            buckets[key].append(i)
        for j in sorted(candidates):
            if representative[j] == j and np.mean(signatures[j] == sig) >= threshold:
                representative[i] = j
                break
    return representative


def previous_matches_any(query_signatures: np.ndarray, reference_signatures: np.ndarray, threshold: float, bands: int = 16) -> np.ndarray:
    """The previous LSH lookup: Python dict buckets of the reference, one query row at a time."""
    rows_per_band = query_signatures.shape[1] // bands if len(query_signatures) else 1
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for j, sig in enumerate(reference_signatures):
        for band in range(bands):
            buckets[(band, sig[band * rows_per_band : (band + 1) * rows_per_band].tobytes())].append(j)
    mask = np.zeros(len(query_signatures), dtype=bool)
    for i, sig in enumerate(query_signatures):
        candidates: set[int] = set()
        for band in range(bands):
            candidates.update(buckets.get((band, sig[band * rows_per_band : (band + 1) * rows_per_band].tobytes()), ()))
        mask[i] = any(np.mean(reference_signatures[j] == sig) >= threshold for j in candidates)
    return mask


def previous_clean(pairs: pd.DataFrame, evaluation, threshold: float = 0.9) -> int:
    """The previous cleaning: exact keys, MinHash near-duplicates, leakage against every evaluation
    query and passage (exact and near). Returns the rows kept."""
    from retrofit_pipeline.dedup import normalize_text

    near_duplicate_groups, matches_any = previous_near_duplicate_groups, previous_matches_any

    keys = pairs["query"].map(normalize_text) + "\x1f" + pairs["positive"].map(normalize_text)
    pairs = pairs.loc[~keys.duplicated().to_numpy()].reset_index(drop=True)
    hasher = PreviousMinHasher()
    representative = np.asarray(near_duplicate_groups(hasher.signatures((pairs["query"] + " " + pairs["positive"]).tolist()), threshold))
    pairs = pairs.loc[representative == np.arange(len(pairs))].reset_index(drop=True)
    eval_texts = pd.concat([evaluation.queries["text"], evaluation.corpus["text"]]).tolist()
    eval_keys = {normalize_text(t) for t in eval_texts}
    exact = pairs["query"].map(normalize_text).isin(eval_keys) | pairs["positive"].map(normalize_text).isin(eval_keys)
    pairs = pairs.loc[~exact.to_numpy()].reset_index(drop=True)
    reference = hasher.signatures(eval_texts)
    near = matches_any(hasher.signatures(pairs["query"].tolist()), reference, threshold) | matches_any(
        hasher.signatures(pairs["positive"].tolist()), reference, threshold)
    return int((~near).sum())


def measure(tool: str, rows: int) -> dict:
    from retrofit_pipeline.mixing import clean_pool
    from retrofit_pipeline.schema import EvaluationSet

    evaluation = EvaluationSet(*(pd.read_parquet(EXPERIMENT / "evaluation" / f"{p}.parquet") for p in ("corpus", "queries", "qrels")))
    pairs = grown_pairs(rows)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    kept = previous_clean(pairs, evaluation) if tool == "previous" else len(clean_pool(pairs, evaluation)[0])
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"tool": tool, "rows": rows, "kept": kept, "seconds": seconds, "peak_rss_mib": peak, "rss_growth_mib": peak - rss_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=100_000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return

    def child(tool: str, rows: int) -> dict:
        out = subprocess.run([sys.executable, __file__, "--child", tool, str(rows)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    previous = child("previous", args.baseline_rows)
    ours_small = child("ours", args.baseline_rows)
    ours = child("ours", args.rows)
    per_row_previous = previous["seconds"] / previous["rows"]
    print(f"machine: {platform.machine()}, {platform.python_version()}")
    print(f"previous implementation, {previous['rows']:,} rows: {previous['seconds']:.1f} s ({per_row_previous * 1e6:.0f} us/row), "
          f"peak RSS {previous['peak_rss_mib']:.0f} MiB")
    print(f"ours, {ours_small['rows']:,} rows: {ours_small['seconds']:.1f} s, peak RSS {ours_small['peak_rss_mib']:.0f} MiB; "
          f"ratio {previous['seconds'] / ours_small['seconds']:.2f}x faster at equal size")
    print(f"ours, {ours['rows']:,} rows: {ours['seconds']:.1f} s ({ours['seconds'] / 60:.1f} min), peak RSS {ours['peak_rss_mib']:.0f} MiB "
          f"(+{ours['rss_growth_mib']:.0f} MiB while cleaning), kept {ours['kept']:,}; the previous one at this size: "
          f"~{per_row_previous * ours['rows'] / 60:.0f} min (extrapolated), ratio {per_row_previous * ours['rows'] / ours['seconds']:.2f}")


if __name__ == "__main__":
    main()
