"""Faults survived, nothing lost: a training run killed with SIGKILL resumes to the same weights
as an uninterrupted run, an unchanged partition re-materializes to the same artifacts and scores,
and a write that hits the file-size limit (a full disk, as the OS reports it) leaves the previous
version in place."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch
import yaml
from dagster import AssetKey, DagsterInstance, materialize
from safetensors.torch import load_file

from retrofit_pipeline.config import load_config
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
from retrofit_pipeline.definitions import defs
from retrofit_pipeline.distributed_training import read_training_data
from retrofit_pipeline.paths import ArtifactPaths
from retrofit_pipeline.trainer import train_encoder

EVERYTHING = list(defs.assets) + list(defs.asset_checks)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A preset of its own (long enough training to be killed mid-way) with its data mined."""
    root = tmp_path_factory.mktemp("faults")
    preset = root / "faults.yaml"
    preset.write_text(yaml.safe_dump({
        "extends": os.environ["RETROFIT_CONFIG"], "name": "faults", "artifacts_dir": str(root / "artifacts"),
        "training": {"epochs": 40, "save_every_steps": 5},
    }))
    settings = RetrofitSettings(config_path=str(preset), device="cpu")
    instance = DagsterInstance.ephemeral()
    for selection, partition in ((["raw_corpora", "evaluation_set", "training_pool", "base_model_scores"], None),
                                 (["training_mixture", "hard_negatives"], "small")):
        assert materialize(EVERYTHING, selection=selection, partition_key=partition, instance=instance,
                           resources={"settings": settings}).success
    return {"root": root, "preset": preset, "settings": settings, "instance": instance,
            "paths": ArtifactPaths(load_config(preset).experiment_dir)}


def test_sigkilled_training_resumes_to_the_uninterrupted_result(world):
    paths, config = world["paths"], load_config(world["preset"])
    reference = world["root"] / "uninterrupted"
    train_encoder(config.base_model, read_training_data(paths, "small"), config.training, reference, world["root"] / "uninterrupted-work")

    # A real Dagster run in its own process, killed without warning once a resume point exists.
    home = world["root"] / "dagster_home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "RETROFIT_CONFIG": str(world["preset"]), "DAGSTER_HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "retrofit_pipeline.definitions",
         "--select", "encoder_checkpoint", "--partition", "small"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    state = paths.training_work("small") / "resume" / "trainer_state.pt"
    deadline = time.monotonic() + 240
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training ended before it could be killed"
    assert not paths.checkpoint("small").exists()  # nothing half-written at the final path

    result = materialize(EVERYTHING, selection=["encoder_checkpoint"], partition_key="small", instance=world["instance"],
                         resources={"settings": world["settings"]})
    assert result.success
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey("encoder_checkpoint"))
    assert event.materialization.metadata["resumed_from_step"].value >= 5
    resumed = load_file(paths.checkpoint("small") / "model.safetensors")
    uninterrupted = load_file(reference / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.allclose(resumed[name], uninterrupted[name], atol=1e-6), name
    losses = json.loads((paths.checkpoint("small") / "training_log.json").read_text())["losses"]
    assert losses == pytest.approx(json.loads((reference / "training_log.json").read_text())["losses"], abs=1e-6)
    leftovers = [p.name for p in paths.checkpoint("small").parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


def _materialize_partition(world):
    result = materialize(EVERYTHING, selection=["hard_negatives", "encoder_checkpoint", "faiss_index", "retrieval_scores"],
                         partition_key="small", instance=world["instance"], resources={"settings": world["settings"]})
    assert result.success
    paths = world["paths"]
    return {
        "negatives": pd.read_parquet(paths.negatives("small")),
        "weights": load_file(paths.checkpoint("small") / "model.safetensors"),
        "index": (paths.index("small") / "index.faiss").read_bytes(),
        "scores": pd.read_parquet(next(paths.scores("small").glob("*.parquet"))),
    }


def test_rematerializing_an_unchanged_partition_reproduces_it(world):
    first = _materialize_partition(world)
    second = _materialize_partition(world)
    pd.testing.assert_frame_equal(first["negatives"], second["negatives"])
    for name in first["weights"]:
        assert torch.equal(first["weights"][name], second["weights"][name]), name
    assert first["index"] == second["index"]
    pd.testing.assert_frame_equal(first["scores"], second["scores"])


WRITE_UNDER_A_SIZE_LIMIT = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    import pandas as pd
    from retrofit_pipeline.artifact_io import write_parquet
    from retrofit_pipeline.encoder import load_encoder
    from retrofit_pipeline.artifact_io import atomic_directory

    target, checkpoint, model = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    encoder = load_encoder(model, device="cpu")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    failures = []
    try:
        write_parquet(pd.DataFrame({"text": [f"row {i} " * 50 for i in range(20000)]}), target)
    except Exception as error:  # pyarrow raises OSError, safetensors its own error: both carry the OS's words
        failures.append(f"table: {error}")
    try:
        with atomic_directory(checkpoint) as tmp:
            encoder.save(str(tmp), safe_serialization=True)
    except Exception as error:
        failures.append(f"checkpoint: {error}")
    print("; ".join(failures))
""")


def test_a_full_disk_leaves_the_previous_version_intact(world, tmp_path):
    table, checkpoint = tmp_path / "table.parquet", tmp_path / "checkpoint"
    pd.DataFrame({"text": ["the previous version"]}).to_parquet(table)
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"previous weights")
    before = table.read_bytes()
    result = subprocess.run([sys.executable, "-c", WRITE_UNDER_A_SIZE_LIMIT, str(table), str(checkpoint), load_config(world["preset"]).base_model],
                            capture_output=True, text=True, check=True)
    table_error, checkpoint_error = result.stdout.strip().split("; ")
    assert table_error.startswith("table: ") and "File too large" in table_error, result.stdout + result.stderr
    assert checkpoint_error.startswith("checkpoint: ") and "File too large" in checkpoint_error, result.stdout + result.stderr
    assert table.read_bytes() == before
    assert (checkpoint / "model.safetensors").read_bytes() == b"previous weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "table.parquet"]  # no temp files left behind
