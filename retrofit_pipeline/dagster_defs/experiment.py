"""One experiment (one preset) in the asset graph: its key prefix, group, job and resource names.

The primary experiment (RETROFIT_CONFIG, default assets/presets/default.yaml) keeps the unprefixed
names it always had (`raw_corpora`, `retrofit_job`, the `settings` resource); every additional one
(RETROFIT_EXPERIMENTS) lives under its preset's name: `<name>/raw_corpora`, group `<name>__data`,
`<name>__retrofit_job`, resource `settings__<name>`. The asset factories (assets/*.py, checks.py,
automation.py) take an Experiment and build that experiment's definitions in a closure, so every
asset body reads its preset from its own experiment's resource. See docs/EXPERIMENTS.md."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from dagster import AssetKey, StaticPartitionsDefinition

from ..config import CONFIG_ENV, DEFAULT_PRESET, PRESETS_DIR, REPO_ROOT, PipelineConfig, load_config
from .partitions import data_scale_partitions, partitions_for
from .resources import RetrofitSettings
from .versions import code_version

EXPERIMENTS_ENV = "RETROFIT_EXPERIMENTS"
PRIMARY_RESOURCE_KEY = "settings"


def dagster_name(name: str) -> str:
    """A preset name as a Dagster name (asset key part, job, group, resource key): [A-Za-z0-9_]+."""
    sanitized = re.sub(r"[^A-Za-z0-9_]", "_", name.strip())
    if not sanitized.strip("_"):
        raise ValueError(f"experiment name {name!r} has no letter or digit to name its assets by")
    return sanitized


def resolve_preset(spec: str | Path) -> Path:
    """A preset by name (assets/presets/<name>.yaml) or by path (absolute, or relative to the
    working directory or to the repository)."""
    text = str(spec).strip()
    candidates = [Path(text).expanduser(), REPO_ROOT / text] if text.endswith((".yaml", ".yml")) or "/" in text else []
    candidates.append(PRESETS_DIR / f"{text}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"{EXPERIMENTS_ENV}: no preset {text!r} (looked at {', '.join(str(c) for c in candidates)})")


@dataclass(frozen=True)
class Experiment:
    """config_path: its preset; primary: the unprefixed experiment (resource key `settings`)."""

    config_path: str
    primary: bool = False

    @cached_property
    def config(self) -> PipelineConfig:
        """The preset as the definitions are loaded (partitions, code versions); the asset bodies
        read theirs from the experiment's resource at run time, as before."""
        return load_config(self.config_path)

    @cached_property
    def name(self) -> str:
        """The preset's `name` as a Dagster name: the key prefix of an additional experiment."""
        return dagster_name(self.config.name)

    @property
    def prefix(self) -> list[str]:
        return [] if self.primary else [self.name]

    @property
    def resource_key(self) -> str:
        return PRIMARY_RESOURCE_KEY if self.primary else f"{PRIMARY_RESOURCE_KEY}__{self.name}"

    def key(self, asset: str) -> AssetKey:
        return AssetKey([*self.prefix, asset])

    def keys(self, *assets: str) -> list[AssetKey]:
        return [self.key(asset) for asset in assets]

    def group(self, group: str) -> str:
        return group if self.primary else f"{self.name}__{group}"

    def named(self, name: str) -> str:
        """A job, schedule, sensor or op name of this experiment."""
        return name if self.primary else f"{self.name}__{name}"

    @cached_property
    def partitions(self) -> StaticPartitionsDefinition:
        # The primary's is the module-level one (partitions.py), which is what it always was.
        return data_scale_partitions if self.primary else partitions_for(self.config)

    def code_version(self, asset: str) -> str:
        return code_version(asset, self.config)

    def settings(self, context) -> RetrofitSettings:
        """This experiment's RetrofitSettings from an asset, check, schedule or sensor context."""
        return getattr(context.resources, self.resource_key)

    def resource(self) -> RetrofitSettings:
        # The primary's default stays RetrofitSettings() (config_path from RETROFIT_CONFIG), as before.
        return RetrofitSettings() if self.primary else RetrofitSettings(config_path=self.config_path)


def primary_experiment() -> Experiment:
    return Experiment(str(Path(os.environ.get(CONFIG_ENV) or DEFAULT_PRESET)), primary=True)


def experiments_from_env(value: str | None = None) -> list[Experiment]:
    """The primary experiment, then one per preset named in RETROFIT_EXPERIMENTS (comma-separated
    preset names or paths); a preset that is the primary's, or named twice, is taken once."""
    primary = primary_experiment()
    value = os.environ.get(EXPERIMENTS_ENV, "") if value is None else value
    specs = [part for part in value.split(",") if part.strip()]
    return [primary, *(Experiment(str(resolve_preset(spec))) for spec in specs)]


def check_distinct(experiments: list[Experiment]) -> list[Experiment]:
    """Drops repeats of the same preset; refuses two presets with one name (they would share the
    key prefix and, under one artifacts_dir, the artifacts folder)."""
    kept: list[Experiment] = []
    seen_paths: set[Path] = set()
    for experiment in experiments:
        path = Path(experiment.config_path).resolve()
        if path in seen_paths:
            continue
        clash = next((other for other in kept if other.name == experiment.name), None)
        if clash is not None:
            raise ValueError(f"experiments {clash.config_path} and {experiment.config_path} are both named {experiment.name!r}: "
                             "give each preset its own `name` (it is the key prefix and the artifacts folder)")
        seen_paths.add(path)
        kept.append(experiment)
    return kept
