"""Filters of generated queries, applied in this order; a query is dropped by the first that
rejects it, so `generated = kept + sum(dropped)` always holds:

1. length          fewer than min_query_chars or more than max_query_chars characters
2. copies_passage  at least max_copy_overlap of the query's word n-grams (character n-grams for
                   CJK/Thai text) occur in its passage: the query copies the passage (a weak
                   generator's usual failure), or the whole query is a long verbatim span of it
3. wrong_language  the language identifier (language_id.py) does not read the query as the language
                   asked for (a language it does not know is kept and counted as unverified)
4. round_trip      the base encoder, ranking the pool of passages of the source passage's language
                   for the query, does not put the source passage within the top k (Promptagator's
                   round-trip consistency; nomic-embed's consistency filtering)
5. duplicate       the same normalized query text in the same language as an earlier one that every
                   other filter kept. Last on purpose: deduplicating before the round trip would drop
                   a later copy in favour of a first one that the round trip then drops too.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..dedup import normalize_text
from .language_id import LanguageIdentifier
from .settings import SyntheticSettings

FILTERS = ("length", "copies_passage", "wrong_language", "round_trip", "duplicate")
_SCRIPT_WITHOUT_SPACES = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\u0e00-\u0e7f]")
_WORD_RE = re.compile(r"\w+")
MIN_VERBATIM_CHARS = 40  # a query this long found verbatim in its passage is a copy whatever its n-grams


def _tokens(text: str) -> list[str]:
    text = normalize_text(text)
    if len(_SCRIPT_WITHOUT_SPACES.findall(text)) * 2 >= len(text.replace(" ", "")):
        return [ch for ch in text if not ch.isspace()]
    return _WORD_RE.findall(text)


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def copy_overlap(query: str, passage: str, n: int) -> float:
    """The share of the query's n-grams that occur in the passage (0 for a query under n tokens)."""
    query_ngrams = _ngrams(_tokens(query), n)
    if not query_ngrams:
        return 0.0
    return len(query_ngrams & _ngrams(_tokens(passage), n)) / len(query_ngrams)


def copies_passage(query: str, passage: str, n: int, max_overlap: float) -> bool:
    normalized = normalize_text(query)
    if len(normalized) >= MIN_VERBATIM_CHARS and normalized in normalize_text(passage):
        return True
    return copy_overlap(query, passage, n) >= max_overlap


def round_trip_ranks(queries: pd.DataFrame, pool: pd.DataFrame, encode_queries: Callable[[list[str]], np.ndarray],
                     encode_passages: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """The rank (1 = first) of each query's source passage among the pool passages of its language."""
    ranks = np.zeros(len(queries), dtype=np.int64)
    if queries.empty:
        return ranks
    passage_vectors = encode_passages(pool["text"].tolist())
    query_vectors = encode_queries(queries["query"].tolist())
    position = {pid: i for i, pid in enumerate(pool["passage_id"])}
    languages = pool["language"].to_numpy()
    for row, (passage_id, language) in enumerate(zip(queries["passage_id"], queries["passage_language"])):
        members = np.flatnonzero(languages == language)
        scores = passage_vectors[members] @ query_vectors[row]
        source = scores[np.flatnonzero(members == position[passage_id])[0]]
        ranks[row] = 1 + int((scores > source).sum())
    return ranks


def filter_queries(queries: pd.DataFrame, passages: pd.DataFrame, settings: SyntheticSettings, identifier: LanguageIdentifier | None = None,
                   pool: pd.DataFrame | None = None, encode_queries=None, encode_passages=None) -> tuple[pd.DataFrame, dict]:
    """Every generated query with `dropped_by` (None: kept) and, where measured, its detected
    language and round-trip rank; and the report: counts per filter, that they add up, examples.
    `passages`: the source passages (passage_id, text); `pool`: the round-trip pool (passage_id,
    language, text), which must contain every source passage."""
    frame = queries.copy().reset_index(drop=True)
    frame["dropped_by"] = None
    frame["detected_language"] = None
    frame["round_trip_rank"] = np.nan
    text_of = dict(zip(passages["passage_id"], passages["text"]))
    unverified = 0

    def alive() -> pd.Series:
        return frame["dropped_by"].isna()

    for row in frame.index:
        query = frame.at[row, "query"]
        if not settings.min_query_chars <= len(query) <= settings.max_query_chars:
            frame.at[row, "dropped_by"] = "length"
        elif copies_passage(query, text_of[frame.at[row, "passage_id"]], settings.copy_ngram, settings.max_copy_overlap):
            frame.at[row, "dropped_by"] = "copies_passage"
        elif settings.language_filter and identifier is not None:
            expected = frame.at[row, "language"]
            if not identifier.knows(expected):
                unverified += 1
                continue
            ok, guess = identifier.accepts(query, expected, settings.min_language_probability)
            frame.at[row, "detected_language"] = guess.language
            if not ok:
                frame.at[row, "dropped_by"] = "wrong_language"
    round_trip = {"top_k": settings.round_trip_top_k, "checked": 0}
    if settings.round_trip_top_k is not None and encode_queries is not None and alive().any():
        survivors = frame[alive()]
        pool = pool if pool is not None else passages
        ranks = round_trip_ranks(survivors, pool, encode_queries, encode_passages)
        frame.loc[survivors.index, "round_trip_rank"] = ranks
        frame.loc[survivors.index[ranks > settings.round_trip_top_k], "dropped_by"] = "round_trip"
        round_trip.update({"checked": int(len(ranks)), "median_rank": float(np.median(ranks)),
                           "pool_per_language": pool.groupby("language").size().to_dict()})
    # Only now, among the queries every other filter kept: a duplicate is dropped in favour of a kept copy.
    keys = frame["language"].str.split("-").str[0] + "\x1f" + frame["query"].map(normalize_text)
    duplicate = keys.where(alive()).duplicated(keep="first") & alive() & keys.notna()
    frame.loc[duplicate, "dropped_by"] = "duplicate"
    dropped = {name: int((frame["dropped_by"] == name).sum()) for name in FILTERS}
    kept = int(frame["dropped_by"].isna().sum())
    report = {
        "generated": len(frame), "kept": kept, "dropped": dropped, "language_unverified": unverified, "round_trip": round_trip,
        "kept_by_task_type": frame[frame["dropped_by"].isna()].groupby("task_type").size().to_dict(),
        "dropped_by_task_type": {f"{task}/{reason}": int(n) for (task, reason), n in frame.dropna(subset=["dropped_by"]).groupby(["task_type", "dropped_by"]).size().items()},
    }
    assert kept + sum(dropped.values()) == len(frame)
    return frame, report


def examples(frame: pd.DataFrame, per_reason: int = 3) -> pd.DataFrame:
    """A few queries per outcome (kept, and each filter), for the asset's metadata."""
    outcome = frame["dropped_by"].fillna("kept")
    return frame.assign(outcome=outcome).groupby("outcome", sort=False).head(per_reason)[
        ["outcome", "task_type", "language", "query", "detected_language", "round_trip_rank"]]
