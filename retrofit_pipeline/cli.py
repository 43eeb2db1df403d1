"""`retrofit run`: the main job from the command line, recorded in the same Dagster instance the
UI reads (DAGSTER_HOME, default ./.dagster_home), so the runs show up in `dagster dev` too."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .config import CONFIG_ENV, REPO_ROOT

FORGETTING_CHECK_STEP = "_no_forgetting"  # the blocking gate: its failure still leaves the scores to show
IN_DOMAIN_CHECK = "retrofitted_beats_base_in_domain"  # the other gate: not blocking, but `retrofit run` fails on it too


def _instance():
    from dagster import DagsterInstance

    from .dagster_defs.pools import ensure_instance_config, pool_notes

    ensure_instance_config(Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home"))))
    instance = DagsterInstance.get()
    for note in pool_notes(instance):
        print(note, flush=True)
    return instance


def run(config_path: str | None, scales: list[str] | None, device: str, verbose: bool = False) -> int:
    if config_path:
        os.environ[CONFIG_ENV] = str(Path(config_path).resolve())
    # Imported after the config is chosen: the partitions are read from it.
    import pandas as pd

    from .cli_output import quiet_terminal, run_logger
    from .comparison import scope_means
    from .config import load_config
    from .dagster_defs.pools import owner_tags
    from .definitions import defs
    from .paths import ArtifactPaths
    from .promotion import gates_summary

    config = load_config()
    scales = scales or [config.default_scale or next(iter(config.data_scales))]
    if scales == ["all"]:
        scales = list(config.data_scales)
    try:
        sizes = {scale: config.pairs_for_scale(scale) for scale in scales}
    except ValueError as error:
        print(f"retrofit run: {error}", file=sys.stderr)
        return 2
    instance = _instance()
    paths = ArtifactPaths(config.experiment_dir)
    log_file = paths.root / "logs" / f"retrofit-run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    print(f"experiment {config.name!r}; the full log (Dagster debug, warnings, progress): {log_file}", flush=True)
    resources = {"settings": defs.resources["settings"].model_copy(update={"device": device})} if device != "auto" else None
    runs = [("prepare_job", None)] + [("retrofit_job", scale) for scale in scales] + [("report_job", None)]
    forgetting = []  # scales whose checkpoint failed the blocking forgetting gate: scored, shown, not promoted
    no_gain = []  # scales whose in-domain gain is not established (interval not above zero): shown, not promoted
    with quiet_terminal(log_file, verbose) as console:
        loggers = {"console": run_logger(log_file, console, verbose)}  # the log file, and a line per step
        for job_name, scale in runs:
            label = f"data scale {scale} ({sizes[scale]} pairs)" if scale else "shared assets"
            print(f"== {job_name}, {label}", file=console, flush=True)
            result = defs.resolve_job_def(job_name).with_logger_defs(loggers).execute_in_process(
                run_config={"loggers": {"console": {}}},  # a job's loggers start only when its run config names them
                partition_key=scale, instance=instance, raise_on_error=False, resources=resources, tags=owner_tags())
            failed = {event.step_key for event in result.all_events if event.is_step_failure}
            if any(e.check_name == IN_DOMAIN_CHECK and not e.passed for e in result.get_asset_check_evaluations()):
                no_gain.append(scale)
            if not result.success and failed and all(step.endswith(FORGETTING_CHECK_STEP) for step in failed):
                forgetting.append(scale)
            elif not result.success:
                print(f"{job_name} failed ({label}); the error is above, the full log in {log_file}, "
                      "the run in `dagster dev`.", file=console, flush=True)
                return 1
    print("\nArtifacts")
    for scale in scales:
        print(f"  checkpoint [{scale}]:  {paths.checkpoint(scale)}")
        print(f"  FAISS index [{scale}]: {paths.index(scale)}")
        print(f"  score table [{scale}]: {paths.scores(scale) / 'score_table.md'}")
    print(f"  data-scale report:   {paths.report}")
    for scale in scales:
        print(f"\nBase vs retrofitted ({config.name}, {scale}) on every scope (nDCG@10; F1 for bitext mining), "
              "each scope's mean first, then per domain and language, with the paired bootstrap 95 % interval of each gain:\n")
        print((paths.scores(scale) / "score_table.md").read_text(encoding="utf-8"))
        print(gates_summary(scope_means(pd.read_parquet(paths.scores(scale) / "comparison.parquet")),
                            config.evaluation.forgetting_margin))
    if no_gain:
        print(f"\nNO IN-DOMAIN GAIN: at data scale(s) {', '.join(no_gain)} the in-domain gain's 95 % interval is not above zero "
              "(the CHECK FAILED line above); such a checkpoint is never promoted.")
    if forgetting:
        print(f"\nFORGETTING: at data scale(s) {', '.join(forgetting)} a loss of more than evaluation.forgetting_margin "
              f"({config.evaluation.forgetting_margin}) against the base is not ruled out on a scope besides in-domain (the CHECK "
              "FAILED line above names it); such a checkpoint is never promoted.")
    return 1 if forgetting or no_gain else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retrofit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="materialize the whole asset chain for one or more data scales")
    run_parser.add_argument("--config", help=f"preset YAML (default: ${CONFIG_ENV} or assets/presets/default.yaml)")
    run_parser.add_argument("--scale", action="append", help="data-scale partition key; repeat, or 'all' (default: the preset's default_scale)")
    run_parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    run_parser.add_argument("--verbose", action="store_true", help="show Dagster's log, warnings and progress bars on the terminal too")
    free_parser = sub.add_parser("free-slot", help="mark a run that nothing runs any more failed and free its pool slot")
    free_parser.add_argument("run_id")
    args = parser.parse_args(argv)
    if args.command == "free-slot":
        return free_slot(args.run_id)
    return run(args.config, args.scale, args.device, args.verbose)


def free_slot(run_id: str) -> int:
    """What the unknown-holder note asks the user to do, for a run they know is dead."""
    from dagster import DagsterInstance

    from .dagster_defs.pools import free_run_slot

    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home"))
    problem = free_run_slot(DagsterInstance.get(), run_id)
    print(problem or f"run {run_id} marked failed; its pool slot is free")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
