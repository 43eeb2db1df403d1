"""Malformed input, tried through the pipeline itself: each case fails with an error naming the
source (file), the row and the field, and leaves nothing half-written behind."""

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import DagsterInstance, materialize

from retrofit_pipeline.cli import run as retrofit_run
from retrofit_pipeline.config import load_config
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
from retrofit_pipeline.definitions import defs
from retrofit_pipeline.paths import ArtifactPaths

EVERYTHING = list(defs.assets) + list(defs.asset_checks)
GOOD = {"pair_id": "a", "query": "wie liste ich dateien", "positive": "ls listet dateien auf", "language": "de",
        "task_type": "summary_retrieval", "source": "user"}


def _jsonl(*rows) -> bytes:
    import json

    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def _second_row(**changes) -> bytes:
    return _jsonl(GOOD, {**GOOD, "pair_id": "b", "query": "список файлов", "positive": "ls выводит список", "language": "ru", **changes})


def _without(column) -> bytes:
    return _jsonl({k: v for k, v in GOOD.items() if k != column})


INVALID_UTF8 = _jsonl(GOOD) + b'{"pair_id": "b", "query": "caf\xe9 \xff", "positive": "p", "language": "fr", "task_type": "bitext", "source": "u"}\n'

# (case, incoming file bytes, where (the line an editor shows, or "header"), field)
INCOMING_CASES = [
    ("missing column", _without("positive"), "header", "positive"),
    ("wrong type", _second_row(query=42), "line 2", "query"),
    ("empty text", _second_row(query=""), "line 2", "query"),
    ("whitespace-only text", _second_row(positive=" \t\n "), "line 2", "positive"),
    ("invalid UTF-8", INVALID_UTF8, "line 2", "query"),
    ("unknown language code", _second_row(language="xx"), "line 2", "language"),
    ("duplicate ids", _second_row(pair_id="a"), "line 2", "pair_id"),
    ("non-Latin text of zero-width characters", _second_row(positive="\u200b\u200d \ufeff\u2060"), "line 2", "positive"),
    ("not JSON", _jsonl(GOOD) + b"{'pair_id': 'b', query: }\n", "line 2", "-"),
    ("blank line", _jsonl(GOOD) + b"\n" + _jsonl({**GOOD, "pair_id": "b"}), "line 2", "-"),
]


def _preset(tmp_path: Path, **overrides) -> Path:
    values = {"extends": os.environ["RETROFIT_CONFIG"], "name": "bad-input", "artifacts_dir": str(tmp_path / "artifacts"),
              "incoming_dir": str(tmp_path / "incoming")}
    values.update(overrides)
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True))
    return path


def _failure_message(preset: Path, selection, partition=None) -> str:
    result = materialize(EVERYTHING, selection=selection, partition_key=partition, instance=DagsterInstance.ephemeral(),
                         resources={"settings": RetrofitSettings(config_path=str(preset), device="cpu")}, raise_on_error=False)
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    while error.cls_name.startswith("Dagster") and error.cause is not None:  # the user-facing error is the first not Dagster's
        error = error.cause
    return error.message


def _nothing_written(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


def _assert_names(message: str, source: str, row, field: str) -> None:
    where = row if isinstance(row, str) and row.startswith("line ") else f"row {row}"
    assert source in message and f"{where}, field '{field}'" in message, message


@pytest.mark.parametrize("case,content,row,field", INCOMING_CASES, ids=[c[0] for c in INCOMING_CASES])
def test_bad_incoming_file(tmp_path, case, content, row, field):
    preset = _preset(tmp_path)
    (tmp_path / "incoming").mkdir()
    bad = tmp_path / "incoming" / "new-pairs.jsonl"
    bad.write_bytes(content)
    message = _failure_message(preset, ["raw_corpora", "evaluation_set"])
    _assert_names(message, str(bad), row, field)
    assert _nothing_written(tmp_path / "artifacts") == []
    assert bad.read_bytes() == content  # the user's file is left as it was


def test_query_without_positive_in_a_mr_tydi_file(tmp_path):
    source = tmp_path / "tydi.jsonl"
    source.write_bytes(_jsonl(
        {"query_id": "1", "query": "was ist ls", "positive_passages": [{"docid": "d1", "title": "", "text": "ls listet"}]},
        {"query_id": "2", "query": "was ist cp", "positive_passages": []},
    ))
    preset = _preset(tmp_path, raw_sources=[{"kind": "hf_tydi", "path": "json", "data_files": str(source), "language": "de",
                                             "source": "mr-tydi-de"}])
    message = _failure_message(preset, ["raw_corpora", "evaluation_set"])
    _assert_names(message, "mr-tydi-de", 1, "positive_passages")
    assert _nothing_written(tmp_path / "artifacts") == []


def test_empty_evaluation_corpus(tmp_path):
    config = load_config()
    source = dict(config.evaluation.sources[0])
    empty = tmp_path / "corpus-empty.parquet"
    pd.DataFrame({"docid": pd.Series([], dtype=str), "title": pd.Series([], dtype=str), "text": pd.Series([], dtype=str)}).to_parquet(empty)
    source["corpus"] = {"path": "parquet", "data_files": str(empty)}
    preset = _preset(tmp_path, evaluation={"sources": [source]})
    message = _failure_message(preset, ["raw_corpora", "evaluation_set"])
    _assert_names(message, f"({empty})", "-", "-")
    assert "(corpus)" in message and "is empty: the file has no rows" in message
    assert _nothing_written(tmp_path / "artifacts") == []


def test_negatives_equal_to_the_positive_stop_training(tmp_path):
    preset = _preset(tmp_path)
    settings = RetrofitSettings(config_path=str(preset), device="cpu")
    instance = DagsterInstance.ephemeral()
    for selection, partition in ((["raw_corpora", "evaluation_set", "training_pool"], None), (["training_mixture", "hard_negatives"], "small")):
        assert materialize(EVERYTHING, selection=selection, partition_key=partition, instance=instance,
                           resources={"settings": settings}).success
    paths = ArtifactPaths(load_config(preset).experiment_dir)
    mined = pd.read_parquet(paths.negatives("small"))
    mined.at[3, "negatives"] = [mined.at[3, "positive"]]
    mined.to_parquet(paths.negatives("small"))
    message = _failure_message(preset, ["encoder_checkpoint"], partition="small")
    _assert_names(message, str(paths.negatives("small")), 3, "negatives")
    assert not paths.checkpoint("small").exists() and not paths.training_work("small").exists()


def test_partition_key_not_in_the_definition(tmp_path, capsys, monkeypatch):
    preset = _preset(tmp_path)
    monkeypatch.setenv("RETROFIT_CONFIG", os.environ["RETROFIT_CONFIG"])  # the CLI sets it; restored afterwards
    assert retrofit_run(str(preset), ["huge"], "cpu") == 2
    message = capsys.readouterr().err
    _assert_names(message, str(preset.resolve()), "-", "data_scales")
    assert "'huge'" in message and "small" in message
    assert _nothing_written(tmp_path / "artifacts") == []


def test_config_naming_a_model_path_that_does_not_exist(tmp_path):
    preset = _preset(tmp_path, base_model=str(tmp_path / "no-such-model"))
    message = _failure_message(preset, ["raw_corpora", "evaluation_set"])
    _assert_names(message, str(preset.resolve()), "-", "base_model")
    assert "no-such-model" in message
    assert _nothing_written(tmp_path / "artifacts") == []


def test_own_pairs_need_only_query_positive_and_language_and_every_bad_line_is_listed(tmp_path):
    from retrofit_pipeline.schema import DataValidationError
    from retrofit_pipeline.sources import read_local_pairs

    good = tmp_path / "mine.jsonl"
    good.write_bytes(_jsonl({"query": "wie liste ich dateien", "positive": "ls listet dateien auf", "language": "de"},
                            {"query": "список файлов", "positive": "ls выводит список", "language": "ru"}))
    frame = read_local_pairs(good, "my-pairs")
    assert set(frame["source"]) == {"my-pairs"} and frame["pair_id"].str.startswith("my-pairs:").all()
    assert read_local_pairs(good, "my-pairs")["pair_id"].tolist() == frame["pair_id"].tolist()  # a content hash: stable

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(_jsonl({"query": "ok query", "positive": "ok passage", "language": "de"},
                           {"query": "", "positive": "p", "language": "de"},
                           {"query": "q", "positive": "p", "language": "xx"},
                           {"query": "q2", "positive": 7, "language": "fr"}) + b"not json\n")
    with pytest.raises(DataValidationError) as caught:
        read_local_pairs(bad)
    message = str(caught.value)
    assert "bad.jsonl: line 5, field '-'" in message  # the unparsable line, first pass
    bad.write_bytes(bad.read_bytes().replace(b"not json\n", b""))
    with pytest.raises(DataValidationError) as caught:
        read_local_pairs(bad)
    message = str(caught.value)
    for expected in ("3 problems in all", "line 2, field 'query'", "line 3, field 'language'", "line 4, field 'positive'"):
        assert expected in message, message
    assert "line 1," not in message
