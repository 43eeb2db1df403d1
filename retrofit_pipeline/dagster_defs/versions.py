"""Code versions of the assets, so the UI (and automation conditions) know exactly what is stale.

An asset's code version is a hash of the source of the modules that compute it and of the preset
sections it reads, taken from the preset of the experiment the asset belongs to (RETROFIT_CONFIG for
the primary one, as its partitions are; each RETROFIT_EXPERIMENTS preset for its own). Editing trainer.py (or a loss), or the `training:` section of the preset, changes the
code version of encoder_checkpoint only; Dagster then shows it and everything downstream of it as stale,
while the mixture and the negatives stay fresh. Raw data carries a data version of its own
(a content hash, set by the asset), so a data refresh marks its dependants stale the same way."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path

from ..config import PipelineConfig, load_config

PACKAGE = Path(__file__).resolve().parent.parent

# The one scoring path (evaluation plan, scopes, mteb tasks, the embedding store) every scoring asset runs.
_SCORING = ("evaluation.py", "evaluation_scopes.py", "scoring.py", "scoring_encoder.py", "embedding_store.py", "shared_layers.py",
            "encoder.py", "dagster_defs/evaluation_plan.py")

# What the dev split (the merge step's model selection) is made of.
_DEV_SPLIT = ("evaluation.held_out_domains", "evaluation.held_out_tasks", "evaluation.pivot_language", "evaluation.scopes",
              "evaluation.dev_fraction", "evaluation.dev_max_queries_per_language", "evaluation.dev_max_corpus_per_language",
              "evaluation.max_length", "evaluation.precision")

# asset -> (source files under retrofit_pipeline/ it is computed by, preset keys it reads)
ASSET_INPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "raw_corpora": (("sources", "schema.py", "dagster_defs/assets/data.py"),
                    ("raw_sources", "incoming_dir", "evaluation.sources", "evaluation.languages", "evaluation.domains")),
    "training_pool": (("mixing.py", "dedup.py"),
                      ("mixture.near_duplicate_threshold", "mixture.seed", "evaluation.held_out_domains", "evaluation.held_out_tasks")),
    # Built only when the preset enables it (synthetic.enabled); the prompts' content is in every cache key.
    "synthetic_queries": (("synthetic", "sources/documents.py", "encoder.py", "dagster_defs/assets/synthetic.py"),
                          ("synthetic", "raw_sources", "base_model", "encode_batch_size", "evaluation.held_out_domains",
                           "training.query_prefix", "training.passage_prefix", "training.max_query_length", "training.max_passage_length")),
    "training_mixture": (("mixing.py",), ("mixture", "data_scales")),
    "hard_negatives": (("mining.py", "encoder.py", "indexing.py", "teacher.py", *_SCORING, "dagster_defs/assets/negatives.py"),
                       ("negatives", "base_model", "encode_batch_size", "training.query_prefix", "training.passage_prefix",
                        "training.max_query_length", "training.max_passage_length", "training.trust_remote_code")),
    # The merge step scores alphas on the dev split, so the checkpoint also reads the evaluation plan.
    "encoder_checkpoint": (("training.py", "trainer.py", "losses", "sampler.py", "weights.py", "process_group.py", "teacher.py", "encoder.py", "model_card.py", "distributed_training.py", "merging.py", *_SCORING,
                            "dagster_defs/assets/checkpoint.py"),
                           ("training", "base_model", "negatives.teacher", "merge", *_DEV_SPLIT)),
    "faiss_index": (("indexing.py", *_SCORING, "dagster_defs/assets/index.py"), ("index_factory", "evaluation")),
    "base_model_scores": ((*_SCORING, "dagster_defs/assets/scores.py"),
                          ("base_model", "evaluation", "training.query_prefix", "training.passage_prefix")),
    "retrieval_scores": ((*_SCORING, "comparison.py", "dagster_defs/assets/scores.py"), ("evaluation", "training.query_prefix", "training.passage_prefix")),
    "dev_scores": ((*_SCORING, "comparison.py", "dagster_defs/assets/scores.py"), ("evaluation", "training.query_prefix", "training.passage_prefix")),
    "data_scale_report": (("reporting.py", "dagster_defs/assets/scores.py"), ("evaluation.plateau_epsilon", "data_scales")),
    "promoted_checkpoint": (("promotion.py", "comparison.py", *_SCORING, "dagster_defs/assets/scores.py"),
                            ("evaluation", "mixture.near_duplicate_threshold")),
    "official_mteb_scores": (("official_benchmarks.py", "dagster_defs/assets/official.py"),
                             ("evaluation.mteb_tasks", "evaluation.mteb_benchmark", "evaluation.mteb_languages",
                              "evaluation.mteb_retrieval_only", "evaluation.mteb_dataset_overrides", "base_model")),
    # One asset over every experiment of the definitions: see experiments_code_version.
    "experiments_report": (("reporting.py", "dagster_defs/assets/experiments.py"), ("name", "data_scales")),
}


def _source_digest(relative: str) -> bytes:
    path = PACKAGE / relative
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(PACKAGE).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.digest()


def _preset_value(config: PipelineConfig, dotted: str):
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return asdict(value) if is_dataclass(value) else value


def code_version(asset: str, config: PipelineConfig | None = None) -> str:
    """The asset's code version under `config` (default: the preset the definitions load)."""
    config = config or load_config()
    sources, keys = ASSET_INPUTS[asset]
    digest = hashlib.sha256()
    for source in sources:
        digest.update(_source_digest(source))
    digest.update(json.dumps({key: _preset_value(config, key) for key in keys}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def experiments_code_version(asset: str, configs: list[PipelineConfig]) -> str:
    """The code version of an asset computed over several experiments (experiments_report): it
    changes when any of them changes what the asset reads, or when one is added or removed."""
    digest = hashlib.sha256()
    for config in configs:
        digest.update(code_version(asset, config).encode())
    return digest.hexdigest()[:16]
