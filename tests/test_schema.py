"""Bad input stops with an error that names the source, the row and the field."""

import pandas as pd
import pytest

from retrofit_pipeline.schema import PAIR_COLUMNS, DataValidationError, EvaluationSet, validate_evaluation_set, validate_pairs


def _pairs(**overrides):
    row = {"pair_id": "p0", "query": "wie liste ich dateien", "positive": "ls listet dateien auf", "language": "de",
           "passage_language": "de", "task_type": "summary_retrieval", "source": "unit"}
    rows = [row, {**row, "pair_id": "p1", "query": "список файлов", "positive": "ls выводит список", "language": "ru", "passage_language": "ru"}]
    rows[1].update(overrides)
    return pd.DataFrame(rows)


BAD_PAIRS = [
    ("missing column", _pairs().drop(columns="positive"), "header", "positive"),
    ("empty text", _pairs(query=""), 1, "query"),
    ("whitespace-only text", _pairs(positive="  \t\n "), 1, "positive"),
    ("zero-width only text", _pairs(query="\u200b\u200d\u2060"), 1, "query"),
    ("wrong type", _pairs(query=42), 1, "query"),
    ("unknown language code", _pairs(language="xx"), 1, "language"),
    ("missing language", _pairs(language=None), 1, "language"),
    ("duplicate ids", _pairs(pair_id="p0"), 1, "pair_id"),
    ("unknown task type", _pairs(task_type="chit-chat"), 1, "task_type"),
]


@pytest.mark.parametrize("label,frame,row,field", BAD_PAIRS, ids=[b[0] for b in BAD_PAIRS])
def test_bad_pairs_name_source_row_and_field(label, frame, row, field):
    with pytest.raises(DataValidationError) as error:
        validate_pairs(frame, "corpus.jsonl")
    assert error.value.source == "corpus.jsonl"
    assert error.value.row == row and error.value.field == field
    assert f"row {row}" in str(error.value) and f"'{field}'" in str(error.value) and "corpus.jsonl" in str(error.value)


def test_valid_pairs_are_normalized():
    frame = validate_pairs(_pairs(language="RU"), "unit")
    assert frame["language"].tolist() == ["de", "ru"]
    assert list(frame.columns) == PAIR_COLUMNS
    assert frame["domain"].tolist() == frame["source"].tolist()  # derived when a source names none
    assert frame["query_id"].str.startswith("q:").all()


def _evaluation(**changes):
    corpus = pd.DataFrame({"doc_id": ["d1", "d2"], "language": ["ja", "ja"], "text": ["ディレクトリの内容を表示", "ファイルをコピーする"]})
    queries = pd.DataFrame({"query_id": ["q1", "q2"], "language": ["ja", "ja"], "text": ["一覧表示", "コピー"]})
    qrels = pd.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["d1", "d2"], "score": [1, 1]})
    parts = {"corpus": corpus, "queries": queries, "qrels": qrels}
    parts.update(changes)
    return EvaluationSet(**parts)


def test_query_without_positive_is_rejected():
    evaluation = _evaluation(qrels=pd.DataFrame({"query_id": ["q1"], "doc_id": ["d1"], "score": [1]}))
    with pytest.raises(DataValidationError, match=r"eval \(queries\): row 1, field 'query_id'.*no positive"):
        validate_evaluation_set(evaluation, "eval")


def test_qrel_to_unknown_document_is_rejected():
    evaluation = _evaluation(qrels=pd.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["d1", "d9"], "score": [1, 1]}))
    with pytest.raises(DataValidationError, match=r"row 1, field 'doc_id'.*d9"):
        validate_evaluation_set(evaluation, "eval")


def test_empty_corpus_is_rejected():
    with pytest.raises(DataValidationError, match="corpus is empty"):
        validate_evaluation_set(_evaluation(corpus=pd.DataFrame(columns=["doc_id", "language", "text"])), "eval")


def test_duplicate_document_ids_are_rejected():
    corpus = pd.DataFrame({"doc_id": ["d1", "d1"], "language": ["ja", "ja"], "text": ["a text", "b text"]})
    with pytest.raises(DataValidationError, match=r"eval \(corpus\): row 1, field 'doc_id'"):
        validate_evaluation_set(_evaluation(corpus=corpus), "eval")
