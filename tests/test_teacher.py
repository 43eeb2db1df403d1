"""The teacher (negatives.teacher): its embeddings computed once through its store, mining by its
ranking, and distillation from its stored vectors training what distillation from a per-step
forward pass of the same model trains."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from dagster import AssetKey, DagsterInstance, materialize
from safetensors.torch import load_file

from retrofit_pipeline.config import load_config
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
from retrofit_pipeline.definitions import defs
from retrofit_pipeline.encoder import load_encoder
from retrofit_pipeline.mining import MiningSettings, mine_negatives
from retrofit_pipeline.paths import ArtifactPaths
from retrofit_pipeline.teacher import Teacher, teacher_targets, training_passages
from retrofit_pipeline.tiny_model import build_tiny_encoder
from retrofit_pipeline.trainer import train_encoder
from retrofit_pipeline.training import TrainingSettings
from synthetic import training_pairs

TINY = Path(os.environ["RETROFIT_CONFIG"]).parent / "tiny-encoder"


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory):
    """A teacher unlike the base: other weights, another width (96), its own prompts saved with it."""
    data = training_pairs(64)
    directory = build_tiny_encoder(data["query"].tolist() + data["positive"].tolist(), tmp_path_factory.mktemp("teacher") / "raw",
                                   hidden_size=96, seed=5)
    target = directory.parent / "teacher"
    load_encoder(str(directory), device="cpu", query_prefix="ask: ", passage_prefix="text: ").save(str(target))
    return target


@pytest.fixture(scope="module")
def base_with_prompts(tmp_path_factory):
    """The tiny base saved with the training prefixes as its own prompts: as a teacher it reads
    exactly what the student reads, so stored distillation must equal per-step distillation."""
    target = tmp_path_factory.mktemp("base-teacher") / "teacher"
    load_encoder(str(TINY), device="cpu", query_prefix="query: ", passage_prefix="passage: ").save(str(target))
    return target


def _frame(rows: int = 32) -> pd.DataFrame:
    data = training_pairs(rows)
    negatives = data["positive"].tolist()[1:] + data["positive"].tolist()[:1]
    return data.assign(negatives=[[n] for n in negatives])


def test_teacher_targets_are_its_own_embeddings_computed_once_through_its_store(other_teacher, tmp_path):
    data = _frame()
    teacher = Teacher(str(other_teacher), tmp_path / "store", 32, 48, device="cpu")
    assert (teacher.query_prompt, teacher.passage_prompt, teacher.dimension) == ("ask: ", "text: ", 96)
    targets = teacher_targets(teacher, data)
    assert targets.metadata["encoded"] == data["query"].nunique() + len(training_passages(data)) and targets.metadata["served"] == 0
    # Row i is the teacher's embedding of row i's query with its own prompt; passages by text.
    model = load_encoder(str(other_teacher), device="cpu")
    expected = model.encode(["ask: " + q for q in data["query"][:4]], normalize_embeddings=True, convert_to_numpy=True)
    assert np.allclose(targets.query_vectors[:4], expected, atol=1e-5)
    passages = targets.passages([data["positive"][3], "", data["negatives"][0][0]], "cpu")
    assert torch.allclose(passages[0], torch.from_numpy(targets.passage_vectors[targets.passage_rows[data["positive"][3]]]))
    assert not passages[1].any()  # a rank's padding slot: masked in every loss, zero here
    # A second run (another partition, a rerun) reads the store: nothing is encoded again.
    again = teacher_targets(Teacher(str(other_teacher), tmp_path / "store", 32, 48, device="cpu"), data)
    assert again.metadata["encoded"] == 0 and again.metadata["served"] == targets.metadata["encoded"]
    assert np.array_equal(again.query_vectors, targets.query_vectors)


def test_distilling_from_the_stored_teacher_trains_what_the_per_step_base_teacher_trains(base_with_prompts, tmp_path):
    """The same model as teacher, once run per step (distill_from base) and once read from its
    stored embeddings (distill_from teacher): the losses and weights agree to float noise, so the
    stored path computes the same target without a teacher forward pass per step."""
    data = _frame()
    settings = dict(epochs=2, batch_size=8, learning_rate=1e-3, max_query_length=32, max_passage_length=48, warmup_ratio=0.0,
                    seed=7, device="cpu", dropout=0.0, distill_weight=1.0)
    train_encoder(str(TINY), data, TrainingSettings(**settings, distill_from="base"), tmp_path / "per-step", tmp_path / "w1")
    targets = teacher_targets(Teacher(str(base_with_prompts), tmp_path / "store", 32, 48, device="cpu"), data)
    train_encoder(str(TINY), data, TrainingSettings(**settings, distill_from="teacher"), tmp_path / "stored", tmp_path / "w2",
                  teacher_targets=targets)
    per_step = json.loads((tmp_path / "per-step" / "training_log.json").read_text())["losses"]
    stored = json.loads((tmp_path / "stored" / "training_log.json").read_text())["losses"]
    assert len(per_step) == len(stored) == 8
    assert max(abs(a - b) for a, b in zip(per_step, stored)) < 1e-4 * max(per_step)
    a, b = load_file(tmp_path / "per-step" / "model.safetensors"), load_file(tmp_path / "stored" / "model.safetensors")
    assert all(torch.allclose(a[name], b[name], atol=1e-4) for name in a)
    # Without distillation the run differs: the comparison above is not vacuous.
    train_encoder(str(TINY), data, TrainingSettings(**{**settings, "distill_weight": 0.0}), tmp_path / "plain", tmp_path / "w3")
    plain = json.loads((tmp_path / "plain" / "training_log.json").read_text())["losses"]
    assert max(abs(a - b) for a, b in zip(plain, stored)) > 1e-2


def test_distillation_from_a_teacher_needs_its_embeddings_and_a_teacher_spec(tmp_path):
    settings = TrainingSettings(batch_size=8, device="cpu", distill_weight=0.5, distill_from="teacher")
    with pytest.raises(ValueError, match="negatives.teacher"):
        train_encoder(str(TINY), _frame(), settings, tmp_path / "out", tmp_path / "work")
    with pytest.raises(ValueError, match="distill_from: choose base or teacher"):
        TrainingSettings(distill_from="teachr").validate()
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"extends": os.environ["RETROFIT_CONFIG"], "training": {"distill_weight": 0.5, "distill_from": "teacher"}}))
    with pytest.raises(ValueError, match="distill_from: teacher needs negatives.teacher"):
        load_config(preset)
    preset.write_text(yaml.safe_dump({"extends": os.environ["RETROFIT_CONFIG"], "negatives": {"teacher": str(tmp_path / "missing")}}))
    with pytest.raises(Exception, match="negatives.teacher"):
        load_config(preset)
    # The teacher's weights are part of what a resume point was made with.
    plain = TrainingSettings().fingerprint("base", "data")
    assert TrainingSettings(distill_from="teacher").fingerprint("base", "data", "teacher-a") != \
        TrainingSettings(distill_from="teacher").fingerprint("base", "data", "teacher-b")
    assert TrainingSettings(distill_from="base").fingerprint("base", "data") == plain


def test_hard_negatives_are_mined_by_the_teacher_through_dagster(other_teacher, tmp_path):
    base = Path(os.environ["RETROFIT_CONFIG"])
    preset = tmp_path / "tiny_teacher.yaml"
    preset.write_text(yaml.safe_dump({"extends": str(base), "name": "tiny-teacher", "artifacts_dir": str(tmp_path / "artifacts"),
                                      "negatives": {"teacher": str(other_teacher), "margin_baseline": "random_pairs"}}))
    instance = DagsterInstance.ephemeral()
    settings = RetrofitSettings(config_path=str(preset), device="cpu")
    everything = list(defs.assets) + list(defs.asset_checks)
    for selection, partition in ((["raw_corpora", "evaluation_set", "training_pool"], None), (["training_mixture", "hard_negatives"], "small")):
        result = materialize(everything, selection=selection, partition_key=partition, instance=instance, resources={"settings": settings})
        assert result.success
    event = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey("hard_negatives")][-1]
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata["mined_with"] == str(other_teacher)
    assert metadata["teacher"]["teacher_dimension"] == 96 and metadata["teacher"]["encoded"] > 0
    # The negatives are the teacher's: the same rows mined directly with its encoders.
    config = load_config(preset)
    paths = ArtifactPaths(config.experiment_dir)
    mined = pd.read_parquet(paths.negatives("small"))
    mixture = pd.read_parquet(paths.mixture("small"))
    teacher = Teacher(str(other_teacher), paths.embeddings, 32, 48, device="cpu")
    expected, _, report = mine_negatives(mixture["query"].tolist(), mixture["positive"].tolist(), config.negatives,
                                         encode_queries=teacher.encode_queries, encode_pool=teacher.encode_passages,
                                         other_positives=mined["other_positives"].tolist())
    assert [list(n) for n in mined["negatives"]] == expected
    assert teacher.counts()["encoded"] == 0  # every text came from the store the asset filled
    assert report.extra["margin_baseline"] == metadata["score_percentiles"]["margin_baseline"]  # the teacher's own baseline
    # ... and not the base's.
    base_negatives, _, _ = mine_negatives(mixture["query"].tolist(), mixture["positive"].tolist(),
                                          MiningSettings(**{**config.negatives.__dict__, "teacher": None}),
                                          encode_queries=_base_encoder(config, "query: ", 32),
                                          encode_pool=lambda texts, out: _base_encoder(config, "passage: ", 48)(texts),
                                          other_positives=mined["other_positives"].tolist())
    assert base_negatives != expected
    # mine_with: base keeps the base's ranking with a teacher set (the teacher then only distils).
    preset.write_text(yaml.safe_dump({"extends": str(base), "name": "tiny-teacher-base", "artifacts_dir": str(tmp_path / "artifacts"),
                                      "negatives": {"teacher": str(other_teacher), "margin_baseline": "random_pairs", "mine_with": "base"}}))
    for selection, partition in ((["raw_corpora", "evaluation_set", "training_pool"], None), (["training_mixture", "hard_negatives"], "small")):
        result = materialize(everything, selection=selection, partition_key=partition, instance=instance, resources={"settings": settings})
        assert result.success
    event = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey("hard_negatives")][-1]
    assert event.materialization.metadata["mined_with"].value == config.base_model
    with pytest.raises(ValueError, match="mine_with"):
        MiningSettings(mine_with="teachr").validate()


def _base_encoder(config, prefix: str, length: int):
    from retrofit_pipeline.encoder import encode_texts

    model = load_encoder(config.base_model, device="cpu", max_length=48)
    return lambda texts: encode_texts(model, texts, prefix, 32, length)
