"""Builds a training mixture of a given size from the raw pair pool.

Order of operations matters: held-out domains, duplicates and evaluation leakage are removed from
the whole pool first (once per raw-data version: the training_pool asset), then the policy samples. Sampling is a seeded shuffle within each group, so a smaller data
scale is a prefix of a larger one under the same policy (a clean data-scale curve)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .dedup import MinHasher, matches_any, near_duplicate_groups, normalize_text
from .schema import EvaluationSet

MIXTURE_POLICIES = ("task_diverse", "language_diverse", "proportional")


@dataclass
class CleaningReport:
    input_rows: int
    held_out_domain_rows: int
    held_out_task_rows: int
    exact_duplicates: int
    near_duplicates: int
    eval_overlap_exact: int
    eval_overlap_near: int
    output_rows: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def leakage_texts(evaluation: EvaluationSet) -> list[str]:
    """What training must not contain: every evaluation query, and every passage the qrels mark
    relevant for one. The rest of a BEIR/MIRACL-style corpus is shared with training by design."""
    relevant = set(evaluation.qrels.loc[evaluation.qrels["score"] > 0, "doc_id"])
    passages = evaluation.corpus.loc[evaluation.corpus["doc_id"].isin(relevant), "text"]
    return pd.concat([evaluation.queries["text"], passages]).tolist()


def evaluation_leakage(
    pairs: pd.DataFrame, evaluation: EvaluationSet, near_duplicate_threshold: float = 0.9, seed: int = 13
) -> tuple[np.ndarray, np.ndarray]:
    """(exact, near) row masks: rows whose query or positive equals a leakage text after
    normalization, and the remaining rows whose query or positive is a MinHash near-duplicate of one.
    The cleaning and the blocking check both call this: one definition of leakage."""
    texts = leakage_texts(evaluation)
    keys = {normalize_text(t) for t in texts}
    exact = (pairs["query"].map(normalize_text).isin(keys) | pairs["positive"].map(normalize_text).isin(keys)).to_numpy()
    near = np.zeros(len(pairs), dtype=bool)
    rest = np.flatnonzero(~exact)
    if len(rest) and texts:
        hasher = MinHasher(seed=seed)
        reference = hasher.signatures(texts)
        candidates = pairs.iloc[rest]
        near[rest] = matches_any(hasher.signatures(candidates["query"].tolist()), reference, near_duplicate_threshold) | matches_any(
            hasher.signatures(candidates["positive"].tolist()), reference, near_duplicate_threshold
        )
    return exact, near


def clean_pool(
    pairs: pd.DataFrame,
    evaluation: EvaluationSet,
    near_duplicate_threshold: float = 0.9,
    seed: int = 13,
    held_out_domains: tuple[str, ...] | list[str] = (),
    held_out_tasks: tuple[str, ...] | list[str] = (),
) -> tuple[pd.DataFrame, CleaningReport]:
    """Drops the held-out (out-of-domain) domains; the held-out task types, with every row whose
    query is the query of such a row (an English FAQ question reused as a cross-lingual query is
    still that task's query form); exact and near-duplicate pairs; and every pair that leaks an
    evaluation query or relevant passage (exactly after normalization, or as a near-duplicate)."""
    input_rows = len(pairs)
    held_out = pairs["domain"].isin(list(held_out_domains)).to_numpy()
    pairs = pairs.loc[~held_out].reset_index(drop=True)
    query_ids = pairs["query_id"] if "query_id" in pairs else pairs["query"]
    held_out_task = query_ids.isin(set(query_ids[pairs["task_type"].isin(list(held_out_tasks))])).to_numpy()
    pairs = pairs.loc[~held_out_task].reset_index(drop=True)

    keys = pairs["query"].map(normalize_text) + "\x1f" + pairs["positive"].map(normalize_text)
    exact = keys.duplicated(keep="first").to_numpy()
    pairs = pairs.loc[~exact].reset_index(drop=True)

    pair_signatures = MinHasher(seed=seed).signatures((pairs["query"] + " " + pairs["positive"]).tolist())
    representative = np.asarray(near_duplicate_groups(pair_signatures, near_duplicate_threshold))
    near = representative != np.arange(len(pairs))
    pairs = pairs.loc[~near].reset_index(drop=True)

    overlap_exact, overlap_near = evaluation_leakage(pairs, evaluation, near_duplicate_threshold, seed)
    pairs = pairs.loc[~(overlap_exact | overlap_near)].reset_index(drop=True)
    report = CleaningReport(
        input_rows=input_rows,
        held_out_domain_rows=int(held_out.sum()),
        held_out_task_rows=int(held_out_task.sum()),
        exact_duplicates=int(exact.sum()),
        near_duplicates=int(near.sum()),
        eval_overlap_exact=int(overlap_exact.sum()),
        eval_overlap_near=int(overlap_near.sum()),
        output_rows=len(pairs),
    )
    return pairs, report


def _balanced_quota(group_sizes: pd.Series, total: int) -> dict:
    """Equal share per group; groups that run out hand their unused share to the others."""
    quota = {g: 0 for g in group_sizes.index}
    remaining, open_groups = total, list(group_sizes.index)
    while remaining > 0 and open_groups:
        share = max(1, remaining // len(open_groups))
        for group in list(open_groups):
            take = min(share, group_sizes[group] - quota[group], remaining)
            quota[group] += take
            remaining -= take
            if quota[group] >= group_sizes[group]:
                open_groups.remove(group)
            if remaining == 0:
                break
    return quota


def sample_mixture(pool: pd.DataFrame, size: int, policy: str, seed: int) -> pd.DataFrame:
    """`size` rows under a mixture policy:
    - task_diverse: equal share per task type (the paper's winning recipe)
    - language_diverse: equal share per query language
    - proportional: the pool's own proportions (a uniform sample)"""
    if policy not in MIXTURE_POLICIES:
        raise ValueError(f"unknown mixture policy {policy!r}; choose one of {MIXTURE_POLICIES}")
    if size <= 0:
        raise ValueError(f"mixture size must be positive, got {size}")
    shuffled = pool.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    if policy == "proportional":
        chosen = shuffled.head(size)
    else:
        column = "task_type" if policy == "task_diverse" else "language"
        quota = _balanced_quota(shuffled.groupby(column).size(), min(size, len(shuffled)))
        chosen = pd.concat([group.head(quota[name]) for name, group in shuffled.groupby(column, sort=True)])
    # Interleave groups so every training batch sees the whole mixture.
    return chosen.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)


def mixture_summary(mixture: pd.DataFrame) -> dict:
    return {
        "rows": len(mixture),
        "by_task": mixture.groupby("task_type").size().to_dict(),
        "by_language": mixture.groupby("language").size().to_dict(),
        "by_domain": mixture.groupby("domain").size().to_dict(),
    }
