"""The data engine end to end, without Dagster: passages -> selection -> generation (cached) ->
filters -> standard-schema pairs. The synthetic_queries asset calls `synthesize` and writes what
it returns; training_pool adds the pairs to the raw pairs before cleaning (`with_synthetic_pairs`),
so deduplication, the evaluation-leakage filter, mixture policies, mining and the data-scale curve
treat them like any other task type."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..schema import PAIR_COLUMNS, validate_pairs
from .cache import ReplyCache
from .filters import examples, filter_queries
from .generate import collect_passages, generate_queries, load_prompts, make_client, plan_items, select_passages
from .language_id import shared_identifier
from .settings import SyntheticSettings

SOURCE_NAME = "synthetic-queries"


@dataclass
class SyntheticResult:
    pairs: pd.DataFrame  # standard schema, the kept queries
    queries: pd.DataFrame  # every generated query, with dropped_by
    report: dict  # selection, generation and filter statistics (the asset's metadata)


def round_trip_pool(passages: pd.DataFrame, selected: pd.DataFrame, per_language: int, seed: int) -> pd.DataFrame:
    """The passages a query's source passage competes with: every selected passage, plus others of
    the same language drawn by seed, up to per_language per language."""
    chosen = set(selected["passage_id"])
    extra = []
    for language, group in passages[~passages["passage_id"].isin(chosen)].groupby("language"):
        room = per_language - int((selected["language"] == language).sum())
        if room > 0:
            order = sorted(group["passage_id"], key=lambda pid: hashlib.sha1(f"{seed}\x1fpool\x1f{pid}".encode()).hexdigest())
            extra.extend(order[:room])
    return pd.concat([selected, passages[passages["passage_id"].isin(set(extra))]], ignore_index=True)


def to_pairs(kept: pd.DataFrame, passages: pd.DataFrame) -> pd.DataFrame:
    """Kept queries as standard-schema training pairs of their own task types."""
    if kept.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    info = passages.set_index("passage_id")
    frame = pd.DataFrame({
        "pair_id": [f"{SOURCE_NAME}:{item_id}" for item_id in kept["item_id"]],
        "query": kept["query"].to_numpy(),
        "positive": info.loc[kept["passage_id"], "text"].to_numpy(),
        "language": kept["language"].to_numpy(),
        "passage_language": kept["passage_language"].to_numpy(),
        "task_type": kept["task_type"].to_numpy(),
        "domain": info.loc[kept["passage_id"], "domain"].to_numpy(),
        "source": SOURCE_NAME,
        "identity": info.loc[kept["passage_id"], "identity"].to_numpy(),  # the passage's document, as its source names it
    })
    return validate_pairs(frame, "synthetic queries")


def encoders_for(config, device: str):
    """Query and passage encoders of the experiment's base model (as mining uses it)."""
    from ..encoder import encode_texts, load_encoder

    training = config.training
    model = load_encoder(config.base_model, device=device, max_length=training.max_passage_length, trust_remote_code=training.trust_remote_code)
    batch = config.encode_batch_size
    return (lambda texts: encode_texts(model, texts, training.query_prefix or "", batch, training.max_query_length, description="round trip: queries"),
            lambda texts: encode_texts(model, texts, training.passage_prefix or "", batch, training.max_passage_length, description="round trip: passages"))


def synthesize(config, raw_pairs: pd.DataFrame | None, cache_dir: Path, device: str = "cpu", environ: dict | None = None,
               progress=None) -> SyntheticResult:
    settings: SyntheticSettings = config.synthetic
    environ = os.environ if environ is None else environ
    passages, passage_stats = collect_passages(config.raw_sources, raw_pairs, settings, config.evaluation.held_out_domains)
    selected = select_passages(passages, settings.passages_per_language, settings.seed)
    prompts = load_prompts(settings)
    items, skipped = plan_items(selected, settings, prompts)
    client = make_client(settings, environ)
    queries, stats = generate_queries(items, prompts, ReplyCache(cache_dir), client, settings, progress)
    encode_queries = encode_passages = None
    pool = selected
    if settings.round_trip_top_k is not None and not queries.empty:
        pool = round_trip_pool(passages, selected, settings.round_trip_pool_per_language, settings.seed)
        encode_queries, encode_passages = encoders_for(config, device)
    identifier = shared_identifier() if settings.language_filter else None
    filtered, filter_report = filter_queries(queries, selected, settings, identifier, pool, encode_queries, encode_passages)
    pairs = to_pairs(filtered[filtered["dropped_by"].isna()], selected)
    report = {
        "model": settings.model, "base_url": settings.base_url,
        "prompts": {name: {"version": p.version, "sha256": p.sha256[:16], "reply": p.reply} for name, p in prompts.items()},
        "passages": {"available": len(passages), "selected": len(selected), "selected_by_language": selected.groupby("language").size().to_dict(),
                     **passage_stats},
        "items": len(items), "items_not_applicable": skipped,
        "generation": stats.as_dict(),
        "filters": filter_report,
        "pairs": len(pairs),
        "examples": examples(filtered).to_dict(orient="records") if not filtered.empty else [],
    }
    return SyntheticResult(pairs, filtered, report)


def with_synthetic_pairs(raw: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, int]:
    """The raw pairs with the synthetic_queries asset's pairs appended (training_pool's input)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: synthetic.enabled is set, so materialize synthetic_queries before training_pool")
    synthetic = pd.read_parquet(path)
    if synthetic.empty:
        return raw, 0
    return pd.concat([raw, synthetic[[c for c in raw.columns if c in synthetic.columns]]], ignore_index=True), len(synthetic)
