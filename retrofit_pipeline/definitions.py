"""The Dagster Definitions: `dagster dev` (workspace.yaml) and the CLI load this module.

The primary experiment is the preset RETROFIT_CONFIG names (default assets/presets/default.yaml),
under the unprefixed asset keys and job names; each preset RETROFIT_EXPERIMENTS lists
(comma-separated names from assets/presets, or paths) is added beside it under its own name:
RETROFIT_EXPERIMENTS=default_no_negatives,default_language_diverse dagster dev. See docs/EXPERIMENTS.md."""

from .dagster_defs.experiment import experiments_from_env
from .dagster_defs.factory import build_definitions

defs = build_definitions(experiments_from_env())
