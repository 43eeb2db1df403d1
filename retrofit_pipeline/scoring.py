"""Scoring a model folder on every scope, the same way for every model.

`score_model_dir` loads the model as a user loads it (plain sentence-transformers: its own maximum
length, prompts and pooling), scores it through the ScoringEncoder (mteb, cached embeddings) on
the given subsets, and writes mteb's results, per-subset scores, per-query scores and a summary
that names the model by content (`model_identity`), the evaluation by fingerprint, the length and
precision used, and the mean per scope."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sentence_transformers import SentenceTransformer

from .artifact_io import read_json, write_json, write_parquet
from .encoder import resolve_device, resolve_model_path
from .evaluation import evaluate_subsets, evaluation_fingerprint
from .evaluation_scopes import (DEV_SCOPES, SCOPES, ScopeRules, Subset, build_subsets, relevance_summary, sample_evaluation, split_dev,
                                subsets_summary)
from .schema import EvaluationSet
from .scoring_encoder import ScoringEncoder


def scope_rules(evaluation_settings) -> ScopeRules:
    return ScopeRules(tuple(evaluation_settings.held_out_domains), tuple(evaluation_settings.held_out_tasks),
                      evaluation_settings.pivot_language, tuple(evaluation_settings.scopes or SCOPES))


@dataclass
class EvaluationPlan:
    """What every model of an experiment is scored on: the scored subsets and the dev subsets
    (model selection only), with the fingerprints that make scores comparable."""

    scored: EvaluationSet
    subsets: list[Subset]
    fingerprint: str
    dev_subsets: list[Subset]
    dev_fingerprint: str | None
    # Per scope, the queries left out of pooled / cross-lingual: none of their documents' versions is in the corpus.
    dropped: dict[str, int] = field(default_factory=dict)
    dev_dropped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        return subsets_summary(self.subsets)

    def dev_summary(self) -> pd.DataFrame:
        return subsets_summary(self.dev_subsets)

    def relevance(self) -> pd.DataFrame:
        return relevance_summary(self.subsets)


def plan_evaluation(evaluation: EvaluationSet, evaluation_settings, seed: int = 13) -> EvaluationPlan:
    """The held-out set split into scored and dev queries (disjoint by identity, every scope on both
    sides), sampled, and turned into scope subsets."""
    rules = scope_rules(evaluation_settings)
    scored, dev = split_dev(evaluation, rules, evaluation_settings.dev_fraction)
    scored = sample_evaluation(scored, evaluation_settings.max_queries_per_language, evaluation_settings.max_corpus_per_language, seed)
    settings = {**rules.as_dict(), "max_length": evaluation_settings.max_length, "precision": evaluation_settings.precision}
    dropped, dev_dropped = {}, {}
    subsets = build_subsets(scored, rules, dropped=dropped)
    dev_subsets, dev_fingerprint = [], None
    if dev is not None:
        dev = sample_evaluation(dev, evaluation_settings.dev_max_queries_per_language, evaluation_settings.dev_max_corpus_per_language, seed)
        dev_subsets = build_subsets(dev, rules, tuple(s for s in DEV_SCOPES if s in rules.scopes), dropped=dev_dropped)
        dev_fingerprint = evaluation_fingerprint(dev, {**settings, "split": "dev"})
    return EvaluationPlan(scored, subsets, evaluation_fingerprint(scored, settings), dev_subsets, dev_fingerprint, dropped, dev_dropped)


def model_folder(spec: str) -> str:
    """The folder a model spec loads from (a hub id: its snapshot in the local cache)."""
    path = resolve_model_path(spec)
    if Path(path).is_dir():
        return path
    from huggingface_hub import snapshot_download

    return snapshot_download(path, local_files_only=True)


def load_for_scoring(model_dir: str, device: str = "auto", trust_remote_code: bool = False,
                     prompts: dict[str, str] | None = None) -> SentenceTransformer:
    """The model exactly as a user loads it: no length or pooling override. `prompts` replaces its
    own (the base model is scored with the prompts the recipe trains its checkpoints with)."""
    model = SentenceTransformer(model_dir, device=resolve_device(device), trust_remote_code=trust_remote_code,
                                model_kwargs={"use_safetensors": True})
    if prompts is not None:
        model.prompts = {name: text for name, text in prompts.items() if text}
        model.default_prompt_name = None
    return model


def scoring_encoder(model_dir: str, store_root: Path, evaluation_settings, device: str = "auto", trust_remote_code: bool = False,
                    prompts: dict[str, str] | None = None, trained_top_layers: int | None = None) -> ScoringEncoder:
    """The model in `model_dir` as the scorer sees it (with `prompts` instead of its own, if given);
    `trained_top_layers` is the recipe's (the states below them are stored for its checkpoints)."""
    model = load_for_scoring(model_dir, device, trust_remote_code, prompts)
    return ScoringEncoder(model, model_dir, store_root, evaluation_settings.max_length, evaluation_settings.precision,
                          evaluation_settings.batch_size, trained_top_layers)


def score_encoder(encoder: ScoringEncoder, subsets: list[Subset], fingerprint: str, results_dir: Path,
                  batch_size: int = 64) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Scores `encoder` on `subsets`; writes mteb/, scores.parquet, per_query.parquet and
    summary.json under `results_dir`."""
    started = time.perf_counter()
    before = dict(encoder.counts)
    encoder.embed_subsets(subsets)
    prepared = encoder.counts["encoded"]
    scores, per_query = evaluate_subsets(encoder, subsets, Path(results_dir) / "mteb", batch_size)
    encoder.store.save()
    summary = {
        "evaluation_fingerprint": fingerprint,
        "model_identity": encoder.identity,
        "max_length": encoder.max_length,
        "precision": encoder.precision,
        "prompts": encoder.prompts,
        "mean_score": {scope: float(group["score"].mean()) for scope, group in per_query.groupby("scope")},  # every query weighs the same
        "texts_encoded": encoder.counts["encoded"] - before["encoded"],
        "texts_served_from_store": encoder.counts["served"] - before["served"],
        "texts_from_shared_layers": encoder.counts["from_shared_layers"] - before["from_shared_layers"],
        "texts_encoded_during_mteb": encoder.counts["encoded"] - prepared,  # 0 unless mteb asked with another prompt
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_parquet(scores, Path(results_dir) / "scores.parquet")
    write_parquet(per_query, Path(results_dir) / "per_query.parquet")
    write_json(summary, Path(results_dir) / "summary.json")
    return scores, per_query, summary


def score_model_dir(model_dir: str, subsets: list[Subset], fingerprint: str, results_dir: Path, store_root: Path,
                    evaluation_settings, device: str = "auto", trust_remote_code: bool = False,
                    prompts: dict[str, str] | None = None, trained_top_layers: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """score_encoder for the model in `model_dir`."""
    encoder = scoring_encoder(model_dir, store_root, evaluation_settings, device, trust_remote_code, prompts, trained_top_layers)
    return score_encoder(encoder, subsets, fingerprint, results_dir, evaluation_settings.batch_size)


def read_scores(results_dir: Path, fingerprint: str, what: str) -> tuple[pd.DataFrame, dict]:
    """Per-query scores and summary of a scored model; they must be on the evaluation `fingerprint`."""
    summary = read_json(Path(results_dir) / "summary.json")
    if summary.get("evaluation_fingerprint") != fingerprint:
        raise ValueError(f"{what} was scored on another evaluation set (fingerprint {summary.get('evaluation_fingerprint')}, "
                         f"now {fingerprint}): re-materialize it first")
    return pd.read_parquet(Path(results_dir) / "per_query.parquet"), summary


def check_comparable(base: dict, tuned: dict) -> None:
    """Two summaries may be compared only at one evaluation length and precision, and with the same
    prompts (a gain must be the weights', not a prompt's)."""
    for key in ("max_length", "precision"):
        if base.get(key) != tuned.get(key):
            raise ValueError(f"the base model was scored with {key}={base.get(key)} and the checkpoint with {key}={tuned.get(key)}: "
                             "the checkpoint must keep its base's maximum length (or set evaluation.max_length for both)")
    if _used_prompts(base.get("prompts")) != _used_prompts(tuned.get("prompts")):
        raise ValueError(f"the base model was scored with the prompts {base.get('prompts')} and the checkpoint with {tuned.get('prompts')}: "
                         "re-materialize base_model_scores with the recipe's training.query_prefix / passage_prefix")


def check_prompts(summary: dict, prompts: dict[str, str] | None, what: str) -> None:
    """Stored scores may be reused only if they were made with `prompts` (the recipe's, see
    dagster_defs.evaluation_plan.training_prompts): a changed query_prefix makes them stale."""
    if _used_prompts(summary.get("prompts")) != _used_prompts(prompts):
        raise ValueError(f"{what} was scored with the prompts {summary.get('prompts')}, the recipe now uses {prompts}: re-materialize it")


def _used_prompts(prompts: dict[str, str] | None) -> dict[str, str]:
    """The prompts scoring applies (ScoringEncoder: "query" and "document"), empty ones left out."""
    return {name: text for name, text in (prompts or {}).items() if text and name in ("query", "document")}
