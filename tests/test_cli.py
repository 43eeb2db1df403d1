"""The README's main command, end to end on the tiny preset: `retrofit run` prints where the
artifacts are and the score table, and the runs land in the Dagster instance the UI reads."""

import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus


def test_retrofit_run_prints_paths_and_scores(tmp_path):
    tiny = Path(os.environ["RETROFIT_CONFIG"])
    preset = tmp_path / "cli.yaml"
    preset.write_text(f"extends: {tiny}\nname: tiny_cli\n")
    home = tmp_path / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "RETROFIT_CONFIG": str(preset)}
    result = subprocess.run([sys.executable, "-m", "retrofit_pipeline", "run", "--config", str(preset), "--scale", "all", "--device", "cpu"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    experiment = tiny.parent / "artifacts" / "tiny_cli"
    assert f"checkpoint [large]:  {experiment / 'checkpoints' / 'large'}" in out
    assert "Base vs retrofitted (tiny_cli, small) on every scope" in out
    assert "**mean**" in out and "| ru " in out and "95% CI of gain" in out
    assert all(f"| {scope} " in out for scope in ("in-domain", "held-out task", "out-of-domain", "pooled", "cross-lingual", "bitext"))
    assert (experiment / "scores" / "large" / "score_table.md").exists()
    assert out.count("Gates, on the 95 % intervals: in-domain gain above zero: ") == 2  # one per scale, passing or not
    assert "every other scope's lower bound above -1 (evaluation.forgetting_margin 1): PASS" in out
    # Quiet by default: a line per step and the tables; Dagster's debug log and the library noise go to the log file.
    assert "DEBUG" not in out and "DEBUG" not in result.stderr and "Warning" not in result.stderr
    assert "  done  encoder_checkpoint" in out and len(out.splitlines()) < 120
    log_file = Path(out.split("progress): ", 1)[1].split()[0])
    assert "STEP_SUCCESS" in log_file.read_text(encoding="utf-8")
    assert (experiment / "report" / "data_scale.png").exists()

    os.environ["DAGSTER_HOME"], previous = str(home), os.environ["DAGSTER_HOME"]
    try:
        with DagsterInstance.get() as instance:
            runs = instance.get_runs()
            assert sorted(r.job_name for r in runs) == ["prepare_job", "report_job", "retrofit_job", "retrofit_job"]
            assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)
    finally:
        os.environ["DAGSTER_HOME"] = previous


def test_retrofit_run_shows_the_scores_and_fails_when_the_forgetting_gate_fails(tmp_path):
    tiny = Path(os.environ["RETROFIT_CONFIG"])
    preset = tmp_path / "strict.yaml"
    # A gain of at least +1.0 on every scope: no model passes, so the gate fails for sure.
    preset.write_text(f"extends: {tiny}\nname: tiny_strict\nevaluation:\n  forgetting_margin: -1.0\n")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "RETROFIT_CONFIG": str(preset)}
    result = subprocess.run([sys.executable, "-m", "retrofit_pipeline", "run", "--config", str(preset), "--device", "cpu"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "CHECK FAILED" in result.stdout and "no_forgetting" in result.stdout
    assert "| pooled " in result.stdout and "FORGETTING: at data scale(s) small" in result.stdout
    # The gates' verdict and the margin they read are stated under the table.
    assert "no forgetting, every other scope's lower bound above +1 (evaluation.forgetting_margin -1): FAIL" in result.stdout
