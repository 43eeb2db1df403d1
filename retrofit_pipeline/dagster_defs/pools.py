"""The heavy assets (mining, training, indexing, scoring) share one concurrency pool, so a backfill
over every data scale queues its GPU work instead of running it all at once on one device.

The pool's limit is instance configuration: the project's instance (DAGSTER_HOME, default
./.dagster_home, written by `retrofit run` and scripts/setup.sh) sets `concurrency: pools:
default_limit: 1` with op granularity; a machine with N devices raises it in its dagster.yaml."""

from __future__ import annotations

import os
import socket
from pathlib import Path

ACCELERATOR_POOL = "accelerator"
HOST_TAG, PID_TAG = "retrofit/host", "retrofit/pid"

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


def owner_tags() -> dict[str, str]:
    """Tags naming the process that runs a job in-process (`retrofit run`, the sweep script), so a
    later run can tell that it died."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def release_abandoned_runs(instance) -> list[str]:
    """An in-process run whose process was killed (kill -9, out of memory, a lost terminal) stays
    STARTED and keeps its pool slot, so every later heavy step would wait for it forever ("Step
    blocked by limit for pool accelerator" in the debug log). Marks such runs of this host failed
    and frees their slots; returns their ids. Runs without the owner tags (launched from the UI)
    are left to Dagster's run monitoring."""
    from dagster import DagsterRunStatus, RunsFilter

    released = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING],
                                            tags={HOST_TAG: socket.gethostname()})):
        pid = int(run.tags.get(PID_TAG, "0"))
        if pid and _alive(pid):
            continue
        _end_run(instance, run, f"abandoned: its process {pid} on this host no longer exists; "
                                f"its {ACCELERATOR_POOL} pool slot was freed by a later run")
        released.append(run.run_id)
    return released


def _end_run(instance, run, message: str) -> None:
    from dagster import DagsterRunStatus

    if run.status in (DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED):
        instance.report_run_failed(run, message=message)
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def pool_notes(instance) -> list[str]:
    """Frees the slots of this host's dead runs and names the holders it cannot judge: one line
    each, printed by `retrofit run` and the sweep before they start."""
    notes = [f"run {run_id} was abandoned by a process that no longer exists: marked failed, its pool slot freed"
             for run_id in release_abandoned_runs(instance)]
    return notes + [unknown_holder_warning(run_id) for run_id in slots_held_by_unknown_runs(instance)]


def slots_held_by_unknown_runs(instance) -> list[str]:
    """Runs holding a pool slot that `release_abandoned_runs` cannot judge (no owner tags: launched
    from the UI, another host, or an older version of this project): if nothing runs them any more,
    every heavy step waits for them, so the caller says so instead of waiting silently."""
    claimed = instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).claimed_slots
    unknown = []
    for run_id in dict.fromkeys(slot.run_id for slot in claimed):
        run = instance.get_run_by_id(run_id)
        if run is None or run.tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in run.tags:
            unknown.append(run_id)
    return unknown


def unknown_holder_warning(run_id: str) -> str:
    return (f"note: run {run_id} holds the {ACCELERATOR_POOL} pool slot and was not started by this project's CLI on this "
            f"host: heavy steps wait until it ends. If nothing runs it any more: retrofit free-slot {run_id}")


def free_run_slot(instance, run_id: str) -> str | None:
    """Marks a run the user knows is dead failed and frees its pool slots; the problem, or None.
    A run of this host whose process is alive is refused."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"no run {run_id} in the Dagster instance at {instance.root_directory}"
    pid = int(run.tags.get(PID_TAG, "0") or 0)
    if run.tags.get(HOST_TAG) == socket.gethostname() and pid and _alive(pid):
        return f"run {run_id} is still running (process {pid} on this host): stop that process first"
    _end_run(instance, run, "marked failed by `retrofit free-slot`: nothing runs it any more")
    return None
