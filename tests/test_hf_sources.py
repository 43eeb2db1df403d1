"""The Hugging Face loaders, run through datasets.load_dataset on local files of the hub formats."""

import json

import pandas as pd
import pytest

from retrofit_pipeline.schema import DataValidationError
from retrofit_pipeline.sources import huggingface


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return str(path)


def test_nq_style_pairs(tmp_path):
    files = _jsonl(tmp_path / "nq.jsonl", [{"query": "who wrote faust", "answer": "Goethe wrote Faust."}, {"query": "capital of japan", "answer": "Tokyo is the capital."}])
    frame = huggingface.load_hf_pairs({"path": "json", "data_files": files, "query_field": "query", "positive_field": "answer", "language": "en", "source": "nq"})
    assert frame["query"].tolist() == ["who wrote faust", "capital of japan"]
    assert set(frame["task_type"]) == {"question_answering"} and set(frame["source"]) == {"nq"}


def test_mmarco_style_parquet_with_language_column(tmp_path):
    pd.DataFrame({"query": ["что такое ДНК"], "positive": ["ДНК — молекула."], "negative": ["Солнце — звезда."], "lang": ["ru"]}).to_parquet(tmp_path / "m.parquet")
    frame = huggingface.load_hf_pairs({"path": "parquet", "data_files": str(tmp_path / "m.parquet"), "language_field": "lang"})
    assert frame.iloc[0]["language"] == "ru"


def test_mr_tydi_style(tmp_path):
    files = _jsonl(tmp_path / "tydi.jsonl", [{"query_id": "1", "query": "ما هي عاصمة مصر", "positive_passages": [{"docid": "7", "title": "مصر", "text": "القاهرة عاصمة مصر"}], "negative_passages": []}])
    frame = huggingface.load_hf_tydi({"path": "json", "data_files": files, "language": "ar"})
    assert frame.iloc[0]["positive"] == "مصر القاهرة عاصمة مصر" and frame.iloc[0]["language"] == "ar"


def test_mr_tydi_keeps_every_positive_under_one_query_and_the_given_negatives(tmp_path):
    files = _jsonl(tmp_path / "tydi.jsonl", [{
        "query_id": "9", "query": "wer schrieb faust",
        "positive_passages": [{"docid": "1", "title": "Faust", "text": "Goethe schrieb Faust."}, {"docid": "2", "title": "Goethe", "text": "Goethe ist der Autor des Faust."}],
        "negative_passages": [{"docid": "3", "title": "Schiller", "text": "Schiller schrieb die Räuber."}]}])
    frame = huggingface.load_hf_tydi({"path": "json", "data_files": files, "language": "de", "source": "mrtydi-de"})
    assert frame["positive"].tolist() == ["Faust Goethe schrieb Faust.", "Goethe Goethe ist der Autor des Faust."]
    assert frame["query_id"].nunique() == 1 and frame["pair_id"].nunique() == 2
    assert [list(n) for n in frame["given_negatives"]] == [["Schiller Schiller schrieb die Räuber."]] * 2


def test_given_negatives_come_first_and_same_query_positives_never(tmp_path):
    from retrofit_pipeline.mining import MiningSettings, mine_negatives

    negatives, ranks, _ = mine_negatives(
        ["q", "q"], ["a", "b"], MiningSettings(strategy="random", num_negatives=2),
        corpus=["x", "y", "z"], other_positives=[["b"], ["a"]], given_negatives=[["b", "g1"], ["g2"]])
    assert negatives[0][0] == "g1" and ranks[0][0] == -2  # "b" is a positive of the same query: never a negative
    assert negatives[1][0] == "g2" and "a" not in negatives[1] and "b" not in negatives[0]


def test_mr_tydi_query_without_positive_is_an_error(tmp_path):
    files = _jsonl(tmp_path / "tydi.jsonl", [{"query_id": "1", "query": "q", "positive_passages": [], "negative_passages": []}])
    with pytest.raises(DataValidationError, match="row 0, field 'positive_passages'"):
        huggingface.load_hf_tydi({"path": "json", "data_files": files, "language": "ar"})


def test_parallel_text(tmp_path):
    files = _jsonl(tmp_path / "para.jsonl", [{"translation": {"en": "Good morning", "zh": "早上好"}}])
    frame = huggingface.load_hf_parallel({"path": "json", "data_files": files, "source_language": "en", "target_language": "zh"})
    assert frame.iloc[0][["query", "positive", "task_type", "passage_language"]].tolist() == ["Good morning", "早上好", "bitext", "zh"]


def test_missing_field_names_file_row_and_field(tmp_path):
    files = _jsonl(tmp_path / "bad.jsonl", [{"question": "x", "answer": "y"}])
    with pytest.raises(DataValidationError, match=r"bad.jsonl.*row 0, field 'query'"):
        huggingface.load_hf_pairs({"path": "json", "data_files": files, "language": "en"})


def test_miracl_style_retrieval(tmp_path):
    pd.DataFrame({"docid": ["1#0", "2#0"], "title": ["Berlin", "Paris"], "text": ["Berlin ist die Hauptstadt.", "Paris ist in Frankreich."]}).to_parquet(tmp_path / "corpus.parquet")
    queries = _jsonl(tmp_path / "q.jsonl", [{"query_id": "5", "query": "Hauptstadt Deutschlands"}])
    qrels = _jsonl(tmp_path / "qrels.jsonl", [{"query_id": "5", "docid": "1#0", "relevance": 1}, {"query_id": "5", "docid": "2#0", "relevance": 0}])
    spec = {"language": "de", "corpus": {"path": "parquet", "data_files": str(tmp_path / "corpus.parquet")},
            "queries": {"path": "json", "data_files": queries}, "qrels": {"path": "json", "data_files": qrels}}
    evaluation = huggingface.load_hf_retrieval(spec)
    assert evaluation.corpus["text"].tolist() == ["Berlin Berlin ist die Hauptstadt.", "Paris Paris ist in Frankreich."]
    pairs = huggingface.retrieval_to_pairs(evaluation, "miracl-de")
    assert len(pairs) == 1 and pairs.iloc[0]["positive"].startswith("Berlin")


def test_mteb_layout_retrieval_with_separate_qrels_id_columns(tmp_path):
    """mteb/MIRACLRetrieval's parquet layout: corpus and queries carry "id", qrels "query-id" and "corpus-id"."""
    pd.DataFrame({"id": ["d1", "d2"], "title": ["", ""], "text": ["Berlin ist die Hauptstadt.", "Paris liegt in Frankreich."]}).to_parquet(tmp_path / "c.parquet")
    pd.DataFrame({"id": ["q1"], "text": ["Hauptstadt Deutschlands"]}).to_parquet(tmp_path / "q.parquet")
    pd.DataFrame({"query-id": ["q1"], "corpus-id": ["d1"], "score": [1]}).to_parquet(tmp_path / "r.parquet")
    spec = {"language": "de", "domain": "encyclopedia",
            "corpus": {"path": "parquet", "data_files": str(tmp_path / "c.parquet")},
            "queries": {"path": "parquet", "data_files": str(tmp_path / "q.parquet")},
            "qrels": {"path": "parquet", "data_files": str(tmp_path / "r.parquet")},
            "fields": {"doc_id": "id", "query_id": "id", "query": "text", "relevance": "score",
                       "qrels_query_id": "query-id", "qrels_doc_id": "corpus-id"}}
    evaluation = huggingface.load_hf_retrieval(spec)
    assert evaluation.qrels[["query_id", "doc_id"]].values.tolist() == [["de:q1", "de:d1"]]
    assert set(evaluation.queries["domain"]) == {"encyclopedia"}
