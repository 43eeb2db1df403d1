"""Which rows form each batch, and this rank's share of it.

Batches are drawn once for the whole run from the seed (a resumed run sees the same batches), each
query at most once per batch, optionally one query language per batch. A global batch is split
over torchrun's ranks; every rank's passages are padded to the same count so they can be
all-gathered, and the label, false-negative mask and further positives of this rank's queries
point into the gathered passages."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from .losses.info_nce import false_negative_mask
from .process_group import Distributed


def answers_by_row(data: pd.DataFrame) -> list[frozenset[str]]:
    """Every correct passage of each row's query: the positives of all rows with its query_id, plus
    the query's other positives in the raw data (column other_positives, when mining added it)."""
    query_ids = data["query_id"] if "query_id" in data else data["query"]
    by_query: dict[str, set[str]] = {}
    for query_id, positive in zip(query_ids, data["positive"]):
        by_query.setdefault(query_id, set()).add(positive)
    if "other_positives" in data:
        for query_id, others in zip(query_ids, data["other_positives"]):
            by_query[query_id].update(others)
    frozen = {key: frozenset(value) for key, value in by_query.items()}
    return [frozen[query_id] for query_id in query_ids]


def translations_by_row(data: pd.DataFrame, limit: int) -> list[list[str]] | None:
    """Up to `limit` translations of each row's positive (column positive_translations, added when
    the negatives are mined), or None when the recipe adds none."""
    if limit <= 0 or "positive_translations" not in data:
        return None
    return [list(texts)[:limit] for texts in data["positive_translations"]]


def _pack(order: list[int], query_ids: list, batch_size: int) -> tuple[list[np.ndarray], list[int]]:
    """Full batches from the rows in `order`, each query at most once per batch (a row whose query
    is already in the batch waits for the next one); returns them and the rows left over."""
    order = order[::-1]  # popped from the end
    batches, waiting = [], []
    while True:
        batch, seen, still_waiting = [], set(), []
        for row in waiting:
            if len(batch) < batch_size and query_ids[row] not in seen:
                batch.append(row)
                seen.add(query_ids[row])
            else:
                still_waiting.append(row)
        while len(batch) < batch_size and order:
            row = order.pop()
            if query_ids[row] in seen:
                still_waiting.append(row)
            else:
                batch.append(row)
                seen.add(query_ids[row])
        waiting = still_waiting
        if len(batch) < batch_size:
            return batches, batch + waiting
        batches.append(np.array(batch))


def query_batches(query_ids: list, batch_size: int, seed: int, epochs: int, groups: list | None = None) -> list[np.ndarray]:
    """The whole run's batch order, fixed by the seed (a resumed run sees the same batches), each
    query at most once per batch. With `groups` (e.g. each row's query language) a batch is drawn
    from one group while the group fills one; the rest of every group is packed into mixed
    batches, and the epoch's batches are shuffled. Rows left over at the end of an epoch (fewer
    than a batch) are dropped, as before."""
    batches = []
    for epoch in range(epochs):
        rng = np.random.default_rng(seed + epoch)
        order = rng.permutation(len(query_ids)).tolist()
        if groups is None:
            batches += _pack(order, query_ids, batch_size)[0]
            continue
        epoch_batches, leftovers = [], []
        for group in sorted(set(groups), key=str):
            members = [row for row in order if groups[row] == group]
            full, left = _pack(members, query_ids, batch_size)
            epoch_batches += full
            leftovers += left
        position = {row: i for i, row in enumerate(order)}
        epoch_batches += _pack(sorted(leftovers, key=position.__getitem__), query_ids, batch_size)[0]
        batches += [epoch_batches[i] for i in rng.permutation(len(epoch_batches))]
    return batches


class LocalBatch(NamedTuple):
    """One rank's share of a global batch, as the loss sees it."""

    queries: list[str]  # this rank's queries, with the query prompt
    passages: list[str]  # this rank's passages, with the passage prompt ("" + prompt in padding slots)
    mask: torch.Tensor  # (queries x every rank's passages): True where a candidate is a masked correct answer or padding
    labels: torch.Tensor  # each query's positive among every rank's passages
    extra_positives: torch.Tensor | None  # True where a passage is a further positive (a translation)
    rows: np.ndarray  # the data rows of this rank's queries
    passage_texts: list[str]  # this rank's passages without the prompt ("" in padding slots)


def local_batch(index: np.ndarray, world: Distributed, positives, negatives, query_prefix: str, passage_prefix: str, queries, answers,
                translations=None) -> LocalBatch:
    """This rank's share of a global batch: its query texts, its passage texts, and for its queries
    the label, the false-negative mask and the further positives (translations of the positive,
    `translations[i]`, when given) over the passages gathered from every rank (rank order).

    The all-gather needs as many passages on every rank; where rows differ in their number of
    translations or negatives, each rank's passages are padded to the longest rank's with empty
    texts, masked for every query (a masked candidate adds nothing to the loss). One process is
    never padded."""
    share = len(index) // world.world_size
    shards = [index[r * share : (r + 1) * share] for r in range(world.world_size)]
    shard_translations = [[translations[i] if translations is not None else [] for i in shard] for shard in shards]
    shard_passages = [[positives[i] for i in shard] + [t for texts in row_translations for t in texts] + [n for i in shard for n in negatives[i]]
                      for shard, row_translations in zip(shards, shard_translations)]
    width = max(len(texts) for texts in shard_passages)
    padding = [rank * width + j for rank, texts in enumerate(shard_passages) for j in range(len(texts), width)]
    shard_passages = [texts + [""] * (width - len(texts)) for texts in shard_passages]
    mine, offset = shards[world.rank], world.rank * width
    labels = list(range(offset, offset + len(mine)))
    extra, start = [], offset + len(mine)
    for row_translations in shard_translations[world.rank]:
        extra.append(list(range(start, start + len(row_translations))))
        start += len(row_translations)
    mask = false_negative_mask([answers[i] for i in mine], [t for texts in shard_passages for t in texts], labels)
    mask[:, padding] = True
    extra_positives = None
    if translations is not None:
        extra_positives = torch.zeros_like(mask)
        for row, columns in enumerate(extra):
            extra_positives[row, columns] = True
        mask &= ~extra_positives  # a translation in the batch is a positive, not a masked false negative
    return LocalBatch(
        [query_prefix + queries[i] for i in mine],
        [passage_prefix + t for t in shard_passages[world.rank]],
        mask, torch.tensor(labels), extra_positives, np.asarray(mine), shard_passages[world.rank],
    )
