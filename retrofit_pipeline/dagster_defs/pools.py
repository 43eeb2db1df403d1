"""The heavy assets (mining, training, indexing, scoring) share one concurrency pool, so a backfill
over every data scale queues its GPU work instead of running it all at once on one device.

The pool's limit is instance configuration: the project's instance (DAGSTER_HOME, default
./.dagster_home, written by `retrofit run` and scripts/setup.sh) sets `concurrency: pools:
default_limit: 1` with op granularity; a machine with N devices raises it in its dagster.yaml."""

from __future__ import annotations

from pathlib import Path

ACCELERATOR_POOL = "accelerator"

INSTANCE_CONFIG = """\
# Written by retrofit_pipeline (dagster_defs/pools.py); edit freely, it is not overwritten.
telemetry:
  enabled: false
concurrency:
  pools:
    granularity: op      # a run waits for a slot at the heavy step, not before it starts
    default_limit: 1     # one heavy step (mining, training, indexing, scoring) at a time: one GPU
"""


def ensure_instance_config(home: Path) -> Path:
    """The project's dagster.yaml in `home`, written once (an existing one is left as it is)."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        settings.write_text(INSTANCE_CONFIG)
    return settings
