"""Official mteb tasks by name: resolution, errors, and a real offline run of MIRACLRetrieval.

No hub access here: the test writes a small local snapshot of the MIRACLRetrieval dataset
repository in the hub's layout (README.md `configs:` + parquet files, as `push_to_hub` lays them
out and `hf download --local-dir` fetches them, download record included) and points the task at
it through `overrides`; the task itself comes from mteb's registry and runs in mteb.evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import huggingface_hub.constants
import mteb
import pandas as pd
import pytest
import yaml

from retrofit_pipeline.encoder import load_encoder
from retrofit_pipeline.official_benchmarks import (
    DOWNLOAD_RECORD, OfficialDataUnavailableError, evaluate_official, resolve_official_tasks,
)
from retrofit_pipeline.schema import DataValidationError
from retrofit_pipeline.tiny_model import build_tiny_encoder

TASK = "MIRACLRetrieval"
PINNED = mteb.get_task(TASK).metadata.dataset["revision"]
WORDS = {
    "de": "Haus Baum Fluss Stadt Berg Wald Brücke Straße Schule Garten Kirche Hafen".split(),
    "fr": "maison arbre fleuve ville montagne forêt pont rue école jardin église port".split(),
    "es": "casa árbol río ciudad montaña bosque puente calle escuela jardín iglesia puerto".split(),
}


def _passages(language: str) -> list[str]:
    words = WORDS[language]
    return [f"{words[i]} {words[(i * 5 + 3) % 12]} {words[(i * 7 + 1) % 12]} {i}" for i in range(12)]


def write_snapshot(root: Path, languages: list[str], revision: str | None = PINNED) -> Path:
    """A MIRACLRetrieval repository snapshot: configs <lang>-corpus / -queries / -qrels, split dev.
    Every query is the exact text of its one relevant passage, so a correct run scores nDCG@10 = 1."""
    configs = []
    for language in languages:
        passages = _passages(language)
        tables = {
            "corpus": pd.DataFrame({"id": [f"{language}{i}#0" for i in range(12)], "title": [""] * 12, "text": passages}),
            "queries": pd.DataFrame({"id": [f"{language}-q{i}" for i in range(0, 12, 2)], "text": passages[0::2]}),
            "qrels": pd.DataFrame({"query-id": [f"{language}-q{i}" for i in range(0, 12, 2)],
                                   "corpus-id": [f"{language}{i}#0" for i in range(0, 12, 2)], "score": [1] * 6}),
        }
        for kind, table in tables.items():
            name = f"{language}-{kind}"
            (root / name).mkdir(parents=True, exist_ok=True)
            table.to_parquet(root / name / "dev-00000-of-00001.parquet", index=False)
            configs.append({"config_name": name, "data_files": [{"split": "dev", "path": f"{name}/dev-*"}]})
    (root / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': configs}, sort_keys=False)}---\n\n# {TASK}\n", encoding="utf-8")
    if revision:
        (root / DOWNLOAD_RECORD).parent.mkdir(parents=True, exist_ok=True)
        (root / DOWNLOAD_RECORD).write_text(f"{revision}\nsha256-of-readme\n1712656091.1\n", encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def offline_and_private_cache(tmp_path, monkeypatch):
    # No hub, and an empty datasets cache of our own (not the user's ~/.cache).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    texts = [p for language in WORDS for p in _passages(language)]
    return load_encoder(str(build_tiny_encoder(texts, tmp_path_factory.mktemp("encoder"))), device="cpu")


def test_official_task_runs_offline_on_a_local_snapshot(tmp_path, tiny_model):
    snapshot = write_snapshot(tmp_path / "mteb-MIRACLRetrieval", ["de", "fr", "es"])
    tasks = resolve_official_tasks([TASK], None, ["de", "fr"])
    assert [type(t) for t in tasks] == [type(mteb.get_task(TASK))] and tasks[0].hf_subsets == ["de", "fr"]

    results_dir = tmp_path / "official"
    table = evaluate_official(tiny_model, tasks, results_dir, batch_size=8, overrides={TASK: str(snapshot)},
                              model_name="retrofit/tiny-test")

    assert table[["task", "subset", "split"]].values.tolist() == [[TASK, "de", "dev"], [TASK, "fr", "dev"]]
    assert table["ndcg_at_10"].between(0, 1).all() and table["recall_at_100"].between(0, 1).all()
    assert table["ndcg_at_10"].tolist() == pytest.approx([1.0, 1.0])  # queries are copies of their passage
    assert (table["main_score_name"] == "ndcg_at_10").all() and (table["main_score"] == table["ndcg_at_10"]).all()
    assert (table["dataset_revision"] == PINNED).all() and table["revision_verified"].all()
    assert table["languages"].tolist() == ["deu-Latn", "fra-Latn"]

    # mteb's result format, read back by mteb itself, named after the checkpoint.
    [result_file] = results_dir.glob(f"results/*/*/{TASK}.json")
    assert result_file.parent.parent.name == "retrofit__tiny-test"
    result = mteb.TaskResult.from_disk(result_file)
    assert result.task_name == TASK and result.dataset_revision == PINNED
    assert {e["hf_subset"]: e["main_score"] for e in result.scores["dev"]} == pytest.approx(
        dict(zip(table["subset"], table["main_score"])), abs=1e-5)
    assert json.loads(result_file.read_text())["mteb_version"] == mteb.__version__
    # The registry's task is untouched: it still points at the hub.
    assert mteb.get_task(TASK).metadata.dataset["path"] == "mteb/MIRACLRetrieval"
    assert tasks[0].metadata.dataset["path"] == "mteb/MIRACLRetrieval" and not tasks[0].data_loaded


def test_missing_data_offline_says_what_to_do(tmp_path, tiny_model):
    tasks = resolve_official_tasks([TASK], None, ["de"])
    with pytest.raises(OfficialDataUnavailableError) as caught:
        evaluate_official(tiny_model, tasks, tmp_path / "official", batch_size=8)
    message = str(caught.value)
    for expected in ("HF_HUB_OFFLINE", "run once with network access", "mteb_dataset_overrides: {MIRACLRetrieval: <DIR>}",
                     f"hf download mteb/MIRACLRetrieval --repo-type dataset --revision {PINNED} --local-dir <DIR>"):
        assert expected in message
    assert not (tmp_path / "official").exists()  # checked before any work: nothing half-written


def test_bad_overrides_are_reported(tmp_path, tiny_model):
    tasks = resolve_official_tasks([TASK], None, ["de", "fr"])
    other_revision = write_snapshot(tmp_path / "old", ["de", "fr"], revision="0" * 40)
    with pytest.raises(DataValidationError, match=f"holds revision {'0' * 40}.*pins {PINNED}"):
        evaluate_official(tiny_model, tasks, tmp_path / "r", 8, overrides={TASK: other_revision})
    with pytest.raises(DataValidationError, match="close names: MIRACLRetrieval"):
        evaluate_official(tiny_model, tasks, tmp_path / "r", 8, overrides={"MIRACLRetrival": other_revision})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataValidationError, match="README.md"):
        evaluate_official(tiny_model, tasks, tmp_path / "r", 8, overrides={TASK: tmp_path / "empty"})
    only_german = write_snapshot(tmp_path / "de-only", ["de"])
    with pytest.raises(OfficialDataUnavailableError, match="could not load it from .*de-only"):
        evaluate_official(tiny_model, tasks, tmp_path / "r", 8, overrides={TASK: only_german})
    assert not (tmp_path / "r").exists()


def test_resolution_errors_name_close_matches():
    with pytest.raises(DataValidationError, match="unknown mteb task 'MIRACLRetrival'.*MIRACLRetrieval"):
        resolve_official_tasks(["MIRACLRetrival"], None, None)
    with pytest.raises(DataValidationError, match=r"unknown mteb benchmark.*MTEB\(Multilingual, v2\)"):
        resolve_official_tasks(None, "MTEB(Multilingual,v2)", None)
    with pytest.raises(DataValidationError, match="STS22 is a STS task, not a retrieval task"):
        resolve_official_tasks(["STS22"], None, None)
    assert [t.metadata.name for t in resolve_official_tasks(["STS22"], None, ["de"], retrieval_only=False)] == ["STS22"]
    with pytest.raises(DataValidationError, match="mteb_languages.*'xx'"):
        resolve_official_tasks([TASK], None, ["de", "xx"])
    with pytest.raises(DataValidationError, match="MIRACLRetrieval has no subset in languages \\['it'\\]"):
        resolve_official_tasks([TASK], None, ["it"])
    with pytest.raises(DataValidationError, match="mteb_tasks"):
        resolve_official_tasks(None, None, None)


def test_benchmark_is_restricted_to_retrieval_tasks_in_the_languages():
    tasks = resolve_official_tasks([TASK], "MTEB(Multilingual, v2)", ["de", "fr"])
    by_name = {t.metadata.name: t for t in tasks}
    assert list(by_name)[0] == TASK and len(by_name) == len(tasks)
    assert all(t.metadata.type == "Retrieval" for t in tasks)
    assert by_name["MIRACLRetrievalHardNegatives"].hf_subsets == ["de", "fr"]
    assert "CovidRetrieval" not in by_name  # Chinese only
    for task in tasks:  # every kept subset is in the requested languages only
        for subset in task.hf_subsets:
            assert {code.split("-")[0] for code in task.metadata.hf_subsets_to_langscripts[subset]} <= {"deu", "fra"}
    # The benchmark's shared task objects were filtered as copies.
    shared = {t.metadata.name: t for t in mteb.get_benchmark("MTEB(Multilingual, v2)").tasks}
    assert len(shared["MIRACLRetrievalHardNegatives"].hf_subsets) == 18


def test_official_mteb_scores_asset_scores_base_and_checkpoint(tmp_path):
    """The asset a user materializes: evaluation.mteb_tasks by name, data from a local snapshot,
    base model and the partition's checkpoint both scored by mteb, the gain tabled."""
    import os

    from dagster import AssetKey, DagsterInstance, materialize

    from retrofit_pipeline.config import load_config
    from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
    from retrofit_pipeline.definitions import defs
    from retrofit_pipeline.paths import ArtifactPaths

    snapshot = write_snapshot(tmp_path / "mteb-MIRACLRetrieval", ["de", "fr"])
    base = load_config()
    preset = tmp_path / "official.yaml"
    preset.write_text(yaml.safe_dump({
        "extends": os.environ["RETROFIT_CONFIG"], "name": "tiny-official", "artifacts_dir": str(tmp_path / "artifacts"),
        "evaluation": {"mteb_tasks": [TASK], "mteb_languages": ["de"], "mteb_dataset_overrides": {TASK: str(snapshot)}},
    }))
    paths = ArtifactPaths(load_config(preset).experiment_dir)
    # The partition's checkpoint: here simply a copy of the base encoder (training is tested elsewhere).
    import shutil

    shutil.copytree(base.base_model, paths.checkpoint("small"))
    result = materialize(list(defs.assets), selection=["official_mteb_scores"], partition_key="small",
                         instance=DagsterInstance.ephemeral(), resources={"settings": RetrofitSettings(config_path=str(preset), device="cpu")})
    assert result.success
    event = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey("official_mteb_scores")][-1]
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata["tasks"] == [TASK]
    table = pd.read_parquet(paths.scores("small") / "official_mteb_scores.parquet")
    assert table["subset"].tolist() == ["de"] and table["gain"].tolist() == pytest.approx([0.0], abs=1e-6)
    assert list(paths.base_scores.glob(f"official_mteb/results/*/*/{TASK}.json"))
    assert list(paths.scores("small").glob(f"official_mteb/results/*/*/{TASK}.json"))
