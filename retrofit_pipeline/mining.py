"""Hard-negative mining: for each training query, passages that look relevant but are not.

Dense strategy (the paper's): embed the passage pool with the base encoder (streamed into a
memory-mapped file), search it exactly with FAISS in query chunks and pool blocks (never a full
query x pool matrix, never a second copy of the pool; a GPU index when one is present),
take candidates from a rank window, and drop likely false negatives: candidates that score above
`max_relative_score` x the positive's score (NV-Retriever's positive-aware filter).
BM25 and random strategies exist for the negatives ablation; `none` trains on in-batch negatives only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .indexing import build_flat_index

NEGATIVE_STRATEGIES = ("dense", "bm25", "random", "none")


@dataclass
class MiningSettings:
    strategy: str = "dense"
    num_negatives: int = 3
    range_min: int = 0  # first rank (0-based, after removing the positive) a negative may come from
    range_max: int = 50  # candidates are searched up to this rank
    max_relative_score: float = 0.95  # drop candidates scoring above this fraction of the positive's score
    query_chunk_size: int = 1024
    seed: int = 13

    def validate(self) -> None:
        if self.strategy not in NEGATIVE_STRATEGIES:
            raise ValueError(f"unknown negatives strategy {self.strategy!r}; choose one of {NEGATIVE_STRATEGIES}")
        if not 0 <= self.range_min < self.range_max:
            raise ValueError(f"rank window must satisfy 0 <= range_min < range_max, got [{self.range_min}, {self.range_max})")
        if self.num_negatives < 0:
            raise ValueError("num_negatives must be >= 0")


@dataclass
class MiningReport:
    strategy: str
    queries: int
    pool_size: int
    negatives_per_query: int
    mean_negative_rank: float | None
    filtered_as_false_negative: int
    candidates_considered: int
    queries_padded_with_random: int
    extra: dict = field(default_factory=dict)

    @property
    def false_negative_share(self) -> float:
        return self.filtered_as_false_negative / max(1, self.candidates_considered)

    def as_dict(self) -> dict:
        data = dict(self.__dict__)
        data["false_negative_share"] = round(self.false_negative_share, 4)
        return data


def _select_from_rankings(
    ranked_ids: np.ndarray,
    ranked_scores: np.ndarray,
    positive_ids: np.ndarray,
    positive_scores: np.ndarray,
    settings: MiningSettings,
) -> tuple[list[list[int]], list[list[int]], int, int]:
    """Negatives from a chunk of rankings (rows best first), vectorized over the chunk.

    A row's rank counts every candidate except the query's own positive; candidates from rank
    range_min on are considered in order until num_negatives are kept, and a considered candidate
    scoring above max_relative_score x the positive's score is dropped as a likely false negative.
    Returns (ids per row, ranks per row, filtered, considered)."""
    valid = (ranked_ids >= 0) & (ranked_ids != positive_ids[:, None])
    rank = np.cumsum(valid, axis=1) - 1
    in_window = valid & (rank >= settings.range_min)
    threshold = np.where(positive_scores > 0, settings.max_relative_score * positive_scores, np.inf)
    false_negative = in_window & (ranked_scores > threshold[:, None])
    keep = in_window & ~false_negative
    # Candidates after the k-th kept one are never looked at (as in a sequential scan).
    kept_before = np.cumsum(keep, axis=1) - keep
    looked_at = kept_before < settings.num_negatives
    chosen = keep & looked_at
    ids = [row_ids[row_mask].tolist() for row_ids, row_mask in zip(ranked_ids, chosen)]
    ranks = [row_rank[row_mask].tolist() for row_rank, row_mask in zip(rank, chosen)]
    return ids, ranks, int((false_negative & looked_at).sum()), int((in_window & looked_at).sum())


def _exact_search_blocked(pool: np.ndarray, queries: np.ndarray, depth: int, block_rows: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-`depth` over a (possibly memory-mapped) pool, one block at a time:
    no copy of the pool is made, so memory stays at the pool's own pages plus one block's results."""
    best_scores = best_ids = None
    for start in range(0, len(pool), block_rows):
        block = np.ascontiguousarray(pool[start : start + block_rows])
        scores, ids = faiss.knn(queries, block, min(depth, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        ids = np.where(ids >= 0, ids + start, -1)
        if best_scores is None:
            best_scores, best_ids = scores, ids
            continue
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, ids], axis=1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
        best_scores, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    return best_scores, best_ids


def _random_pool_ids(rng: np.random.Generator, pool_size: int, excluded: set[int], count: int) -> list[int]:
    """`count` distinct pool ids outside `excluded`, uniformly drawn in O(count) (not O(pool))."""
    count = min(count, pool_size - len(excluded))
    chosen: list[int] = []
    seen = set(excluded)
    while len(chosen) < count:
        for candidate in rng.integers(0, pool_size, size=2 * (count - len(chosen)) + 4).tolist():
            if candidate not in seen:
                seen.add(candidate)
                chosen.append(candidate)
                if len(chosen) == count:
                    break
    return chosen


def _bm25_scores_factory(pool_texts: list[str], k1: float = 1.2, b: float = 0.75):
    """BM25 over character 1-3-grams within word boundaries: works for scripts without spaces."""
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer(analyzer="char_wb", ngram_range=(1, 3), lowercase=True, dtype=np.float32)
    tf = vectorizer.fit_transform(pool_texts).tocsr()
    doc_len = np.asarray(tf.sum(axis=1)).ravel()
    df = np.bincount(tf.indices, minlength=tf.shape[1])
    idf = np.log1p((tf.shape[0] - df + 0.5) / (df + 0.5)).astype(np.float32)
    tf = tf.tocoo()
    norm = k1 * (1 - b + b * doc_len[tf.row] / doc_len.mean())
    weights = tf.data * (k1 + 1) / (tf.data + norm) * idf[tf.col]
    from scipy.sparse import csr_matrix

    doc_matrix = csr_matrix((weights.astype(np.float32), (tf.row, tf.col)), shape=tf.shape).T.tocsr()

    def score(queries: list[str]) -> np.ndarray:
        query_matrix = vectorizer.transform(queries)
        query_matrix.data[:] = 1.0
        return (query_matrix @ doc_matrix).toarray()

    return score


def mine_negatives(
    queries: list[str],
    positives: list[str],
    settings: MiningSettings,
    encode_queries=None,
    encode_pool=None,
    work_dir: Path | None = None,
    use_gpu: bool = False,
    corpus: list[str] | None = None,
) -> tuple[list[list[str]], list[list[int]], MiningReport]:
    """Negatives for each (query, positive). The pool is the distinct positives plus `corpus`.

    `encode_queries(texts) -> np.ndarray` and `encode_pool(texts, out) -> np.ndarray` are needed for
    the dense strategy; they return L2-normalized float32 rows (`encode_pool` writes into `out`, a
    memory-mapped file under `work_dir` when one is given)."""
    settings.validate()
    pool_texts = list(dict.fromkeys(positives + list(corpus or [])))
    pool_index = {text: i for i, text in enumerate(pool_texts)}
    positive_ids = np.array([pool_index[p] for p in positives])
    rng = np.random.default_rng(settings.seed)
    n = len(queries)
    negatives_ids: list[list[int]] = [[] for _ in range(n)]
    negatives_ranks: list[list[int]] = [[] for _ in range(n)]
    filtered = considered = 0
    extra: dict = {}

    if settings.strategy == "none" or settings.num_negatives == 0:
        return [[] for _ in range(n)], [[] for _ in range(n)], MiningReport(
            settings.strategy, n, len(pool_texts), 0, None, 0, 0, 0
        )

    depth = min(len(pool_texts), settings.range_max + 1)  # +1: the positive itself is usually ranked
    if settings.strategy == "dense":
        if encode_queries is None or encode_pool is None:
            raise ValueError("dense mining needs an encoder")
        out = None
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
            dimension = encode_queries(pool_texts[:1]).shape[1]
            out = np.lib.format.open_memmap(work_dir / "pool_embeddings.npy", mode="w+", dtype=np.float32, shape=(len(pool_texts), dimension))
        pool_embeddings = encode_pool(pool_texts, out)
        gpu_index = build_flat_index(pool_embeddings, use_gpu=True) if use_gpu else None
        for start in tqdm(range(0, n, settings.query_chunk_size), desc="search pool", leave=False):
            stop = min(n, start + settings.query_chunk_size)
            query_embeddings = encode_queries(queries[start:stop])
            if gpu_index is not None:
                scores, ids = gpu_index.search(query_embeddings, depth)
            else:
                scores, ids = _exact_search_blocked(pool_embeddings, query_embeddings, depth)
            chunk_positive_ids = positive_ids[start:stop]
            positive_scores = np.einsum("ij,ij->i", query_embeddings, pool_embeddings[chunk_positive_ids])
            ids_chunk, ranks_chunk, f, c = _select_from_rankings(ids, scores, chunk_positive_ids, positive_scores, settings)
            negatives_ids[start:stop], negatives_ranks[start:stop] = ids_chunk, ranks_chunk
            filtered += f
            considered += c
    elif settings.strategy == "bm25":
        score = _bm25_scores_factory(pool_texts)
        for start in tqdm(range(0, n, settings.query_chunk_size), desc="bm25 search", leave=False):
            stop = min(n, start + settings.query_chunk_size)
            scores = score(queries[start:stop])
            top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth] if depth < scores.shape[1] else np.tile(np.arange(scores.shape[1]), (stop - start, 1))
            order = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
            chunk_positive_ids = positive_ids[start:stop]
            positive_scores = scores[np.arange(stop - start), chunk_positive_ids]
            ids_chunk, ranks_chunk, f, c = _select_from_rankings(order, np.take_along_axis(scores, order, 1), chunk_positive_ids, positive_scores, settings)
            negatives_ids[start:stop], negatives_ranks[start:stop] = ids_chunk, ranks_chunk
            filtered += f
            considered += c

    padded = 0
    for i in range(n):  # random strategy, and padding where a window ran short (tiny pools)
        missing = settings.num_negatives - len(negatives_ids[i])
        if missing <= 0:
            continue
        if settings.strategy != "random":
            padded += 1
        drawn = _random_pool_ids(rng, len(pool_texts), set(negatives_ids[i]) | {int(positive_ids[i])}, missing)
        negatives_ids[i].extend(drawn)
        negatives_ranks[i].extend([-1] * len(drawn))

    real_ranks = [r for ranks in negatives_ranks for r in ranks if r >= 0]
    report = MiningReport(
        strategy=settings.strategy,
        queries=n,
        pool_size=len(pool_texts),
        negatives_per_query=settings.num_negatives,
        mean_negative_rank=float(np.mean(real_ranks)) if real_ranks else None,
        filtered_as_false_negative=filtered,
        candidates_considered=considered,
        queries_padded_with_random=padded,
        extra=extra,
    )
    texts = [[pool_texts[j] for j in ids] for ids in negatives_ids]
    return texts, negatives_ranks, report


def attach_negatives(mixture: pd.DataFrame, negatives: list[list[str]], ranks: list[list[int]]) -> pd.DataFrame:
    frame = mixture.copy()
    frame["negatives"] = negatives
    frame["negative_ranks"] = ranks
    return frame
