"""Hard-negative mining: for each training query, passages that look relevant but are not.

Dense strategy (the paper's): embed the passage pool with the base encoder (streamed into a
memory-mapped file), search it with FAISS in query chunks (never a full query x pool matrix),
take candidates from a rank window, and drop likely false negatives: candidates that score above
`max_relative_score` x the positive's score (NV-Retriever's positive-aware filter).
BM25 and random strategies exist for the negatives ablation; `none` trains on in-batch negatives only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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


def _select_from_ranking(
    ranked_ids: np.ndarray,
    ranked_scores: np.ndarray,
    positive_id: int,
    positive_score: float,
    settings: MiningSettings,
) -> tuple[list[int], list[int], int, int]:
    """Negatives from one query's ranking: (ids, ranks, filtered as false negatives, considered)."""
    chosen, ranks, filtered, considered = [], [], 0, 0
    rank = 0
    for doc_id, score in zip(ranked_ids, ranked_scores):
        if doc_id < 0 or doc_id == positive_id:
            continue
        if rank >= settings.range_min:
            considered += 1
            if positive_score > 0 and score > settings.max_relative_score * positive_score:
                filtered += 1
            else:
                chosen.append(int(doc_id))
                ranks.append(rank)
                if len(chosen) == settings.num_negatives:
                    break
        rank += 1
    return chosen, ranks, filtered, considered


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
) -> tuple[list[list[str]], list[list[int]], MiningReport]:
    """Negatives for each (query, positive). The pool is the set of distinct positives.

    `encode_queries(texts) -> np.ndarray` and `encode_pool(texts, out) -> np.ndarray` are needed for
    the dense strategy; they return L2-normalized float32 rows."""
    settings.validate()
    pool_texts = list(dict.fromkeys(positives))
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

    if settings.strategy == "dense":
        if encode_queries is None or encode_pool is None:
            raise ValueError("dense mining needs an encoder")
        out = None
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
            probe = encode_queries(pool_texts[:1])
            out = np.lib.format.open_memmap(work_dir / "pool_embeddings.npy", mode="w+", dtype=np.float32, shape=(len(pool_texts), probe.shape[1]))
        pool_embeddings = encode_pool(pool_texts, out)
        index = build_flat_index(pool_embeddings, use_gpu=use_gpu)
        depth = min(len(pool_texts), settings.range_max + 1)
        for start in tqdm(range(0, n, settings.query_chunk_size), desc="search pool", leave=False):
            stop = min(n, start + settings.query_chunk_size)
            query_embeddings = encode_queries(queries[start:stop])
            scores, ids = index.search(query_embeddings, depth)
            positive_scores = np.einsum("ij,ij->i", query_embeddings, pool_embeddings[positive_ids[start:stop]])
            for offset in range(stop - start):
                i = start + offset
                chosen, ranks, f, c = _select_from_ranking(ids[offset], scores[offset], positive_ids[i], float(positive_scores[offset]), settings)
                negatives_ids[i], negatives_ranks[i] = chosen, ranks
                filtered += f
                considered += c
    elif settings.strategy == "bm25":
        score = _bm25_scores_factory(pool_texts)
        depth = min(len(pool_texts), settings.range_max + 1)
        for start in tqdm(range(0, n, settings.query_chunk_size), desc="bm25 search", leave=False):
            stop = min(n, start + settings.query_chunk_size)
            scores = score(queries[start:stop])
            top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth] if depth < scores.shape[1] else np.tile(np.arange(scores.shape[1]), (stop - start, 1))
            for offset in range(stop - start):
                i = start + offset
                order = top[offset][np.argsort(-scores[offset, top[offset]], kind="stable")]
                positive_score = float(scores[offset, positive_ids[i]])
                chosen, ranks, f, c = _select_from_ranking(order, scores[offset, order], positive_ids[i], positive_score, settings)
                negatives_ids[i], negatives_ranks[i] = chosen, ranks
                filtered += f
                considered += c

    padded = 0
    for i in range(n):  # random strategy, and padding where a window ran short (tiny pools)
        missing = settings.num_negatives - len(negatives_ids[i])
        if missing <= 0:
            continue
        if settings.strategy != "random":
            padded += 1
        excluded = set(negatives_ids[i]) | {int(positive_ids[i])}
        candidates = [c for c in rng.permutation(len(pool_texts))[: missing + len(excluded) + 8] if c not in excluded]
        negatives_ids[i].extend(int(c) for c in candidates[:missing])
        negatives_ranks[i].extend([-1] * len(candidates[:missing]))

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
