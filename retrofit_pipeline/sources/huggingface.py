"""Loaders for Hugging Face datasets, mapped onto the standard schema.

Every loader goes through `datasets.load_dataset(path, name, split=..., data_files=...)`, so the
same spec works for a hub dataset (on a machine with network access) and for local parquet/jsonl
files in the same format (`path: json` or `path: parquet` plus `data_files`).

Kinds:
- hf_pairs:      one row = query + positive (NQ-style QA pairs, mMARCO triples, any (anchor, positive))
- hf_tydi:       Mr. TyDi / MIRACL-train style: query + a list of positive passage dicts
- hf_parallel:   parallel text (bitext): {translation: {en: ..., de: ...}} or two text columns
- hf_retrieval:  MIRACL/BEIR-style corpus + queries + qrels, for evaluation (or for training pairs)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..schema import DataValidationError, EvaluationSet, validate_evaluation_set, validate_pairs


def _load(spec: dict, label: str):
    from datasets import load_dataset

    if "path" not in spec:
        raise ValueError(f"{label}: dataset spec needs 'path' (a hub id, or 'json'/'parquet' with data_files)")
    kwargs: dict[str, Any] = {"split": spec.get("split", "train")}
    if spec.get("data_files"):
        kwargs["data_files"] = spec["data_files"]
    if spec.get("revision"):
        kwargs["revision"] = spec["revision"]
    _reject_empty_local_files(spec, label)
    try:
        return load_dataset(spec["path"], spec.get("name"), **kwargs)
    except Exception as error:  # datasets wraps the reader's error; the innermost one says what is wrong
        cause = error
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise DataValidationError(label, "-", "-", f"datasets.load_dataset could not read it: {type(cause).__name__}: {cause}") from error


def _reject_empty_local_files(spec: dict, label: str) -> None:
    """datasets fails on an empty local file with an unrelated message (a batch size of 0, a
    StopIteration); say what is wrong instead."""
    files = spec.get("data_files")
    files = [files] if isinstance(files, str) else files if isinstance(files, list) else []
    for name in files:
        path = Path(name)
        if not path.is_file():
            continue
        if spec.get("path") == "parquet":
            import pyarrow.parquet as pq

            empty = pq.ParquetFile(path).metadata.num_rows == 0
        else:
            with open(path, "rb") as handle:
                empty = not any(line.strip() for line in handle)
        if empty:
            raise DataValidationError(label, "-", "-", f"{path} is empty: the file has no rows")


def _describe(spec: dict) -> str:
    """The source's configured name, if any, and where it is read from."""
    files = spec.get("data_files")
    where = f"{spec.get('path')}" + (f"[{spec['name']}]" if spec.get("name") else "") + (f" ({files})" if files else "")
    return f"{spec['source']}: {where}" if spec.get("source") else where


def _field(row: dict, name: str, label: str, index: int) -> Any:
    """A field, with dotted access into nested dicts ('translation.de')."""
    value: Any = row
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataValidationError(label, index, name, f"missing field (row has {sorted(row)})")
        value = value[part]
    return value


def _limit(dataset, spec: dict):
    limit = spec.get("max_rows")
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def load_hf_pairs(spec: dict) -> pd.DataFrame:
    label = _describe(spec)
    dataset = _limit(_load(spec, label), spec)
    query_field, positive_field = spec.get("query_field", "query"), spec.get("positive_field", "positive")
    language_field, language = spec.get("language_field"), spec.get("language")
    rows = []
    for index, row in enumerate(dataset):
        lang = _field(row, language_field, label, index) if language_field else language
        rows.append({
            "pair_id": f"{spec.get('source', label)}:{index}",
            "query": _field(row, query_field, label, index),
            "positive": _field(row, positive_field, label, index),
            "language": lang,
            "passage_language": spec.get("passage_language", lang),
            "task_type": _field(row, spec["task_type_field"], label, index) if spec.get("task_type_field") else spec.get("task_type", "question_answering"),
            "source": spec.get("source", label),
        })
    return validate_pairs(pd.DataFrame(rows), label)


def _passage_text(passage: Any) -> Any:
    """A Mr. TyDi / MIRACL passage dict ({docid, title, text}) as one text; a plain string as is."""
    if isinstance(passage, dict):
        text = passage.get("text")
        return f"{passage.get('title', '')} {text}".strip() if isinstance(text, str) else text
    return passage


def load_hf_tydi(spec: dict) -> pd.DataFrame:
    """One row per positive passage (rows of one query share its query_id, so none is treated as a
    negative of another), with the dataset's own negatives (negative_passages) kept in the column
    given_negatives for the negatives step to use."""
    label = _describe(spec)
    dataset = _limit(_load(spec, label), spec)
    positives_field = spec.get("positives_field", "positive_passages")
    negatives_field = spec.get("negatives_field", "negative_passages")
    source = spec.get("source", label)
    rows = []
    for index, row in enumerate(dataset):
        positives = _field(row, positives_field, label, index)
        if not positives:
            raise DataValidationError(label, index, positives_field, "query has no positive passage")
        query_id = f"{source}:{_field(row, spec.get('id_field', 'query_id'), label, index)}"
        given_negatives = [_passage_text(p) for p in (row.get(negatives_field) or [])] if isinstance(row, dict) else []
        for number, passage in enumerate(positives):
            rows.append({
                "pair_id": f"{query_id}:{number}",
                "query_id": query_id,
                "query": _field(row, spec.get("query_field", "query"), label, index),
                "positive": _passage_text(passage),
                "language": spec.get("language"),
                "passage_language": spec.get("language"),
                "task_type": spec.get("task_type", "question_answering"),
                "source": source,
                "given_negatives": given_negatives,
            })
    return validate_pairs(pd.DataFrame(rows), label)


def load_hf_parallel(spec: dict) -> pd.DataFrame:
    label = _describe(spec)
    dataset = _limit(_load(spec, label), spec)
    source_lang, target_lang = spec["source_language"], spec["target_language"]
    source_field = spec.get("source_field", f"translation.{source_lang}")
    target_field = spec.get("target_field", f"translation.{target_lang}")
    rows = [{
        "pair_id": f"{spec.get('source', label)}:{index}",
        "query": _field(row, source_field, label, index),
        "positive": _field(row, target_field, label, index),
        "language": source_lang, "passage_language": target_lang,
        "task_type": "bitext", "source": spec.get("source", label),
    } for index, row in enumerate(dataset)]
    return validate_pairs(pd.DataFrame(rows), label)


def load_hf_retrieval(spec: dict) -> EvaluationSet:
    """corpus (docid, title, text) + queries (query_id, query) + qrels (query_id, docid, relevance).
    Optional: `fields: {identity: <column>}` names a document identity column in the corpus and the
    queries (the same document in every language: pooled and cross-lingual scopes judge its
    translations relevant), and `task_type:` the queries' form (default question_answering; bitext
    makes the set a bitext-mining scope: each query's one relevant document is its translation)."""
    language = spec["language"]
    label = f"{_describe(spec['corpus'])} [{language}]"
    corpus = _load(spec["corpus"], f"{label} (corpus)").to_pandas()
    queries = _load(spec["queries"], f"{_describe(spec['queries'])} [{language}] (queries)").to_pandas()
    qrels = _load(spec["qrels"], f"{_describe(spec['qrels'])} [{language}] (qrels)").to_pandas()
    fields = {"doc_id": "docid", "title": "title", "text": "text", "query_id": "query_id", "query": "query", "relevance": "relevance"}
    fields.update(spec.get("fields", {}))
    # The qrels may name the ids differently from the corpus and queries (mteb's layout: corpus
    # and queries "id", qrels "query-id" / "corpus-id").
    fields.setdefault("qrels_query_id", fields["query_id"])
    fields.setdefault("qrels_doc_id", fields["doc_id"])
    for frame, needed, part in ((corpus, ("doc_id", "text"), "corpus"), (queries, ("query_id", "query"), "queries"), (qrels, ("qrels_query_id", "qrels_doc_id", "relevance"), "qrels")):
        for key in needed:
            if fields[key] not in frame.columns:
                raise DataValidationError(f"{label} ({part})", "header", fields[key], f"missing column; found {list(frame.columns)}")
    titles = corpus[fields["title"]].fillna("") if fields["title"] in corpus.columns else ""
    corpus_text = (titles + " " + corpus[fields["text"]].fillna("")).str.strip() if isinstance(titles, pd.Series) else corpus[fields["text"]]
    prefix = f"{language}:"
    domain = spec.get("domain", spec.get("source", "evaluation"))
    identity = fields.get("identity")
    for frame, part in ((corpus, "corpus"), (queries, "queries")):
        if identity and identity not in frame.columns:
            raise DataValidationError(f"{label} ({part})", "header", identity, f"missing identity column; found {list(frame.columns)}")
    extra = {}
    if identity:
        extra = {"corpus": {"identity": f"{domain}:" + corpus[identity].astype(str)}, "queries": {"identity": f"{domain}:" + queries[identity].astype(str)}}
    evaluation = EvaluationSet(
        corpus=pd.DataFrame({"doc_id": prefix + corpus[fields["doc_id"]].astype(str), "language": language, "domain": domain, "text": corpus_text,
                             **extra.get("corpus", {})}),
        queries=pd.DataFrame({"query_id": prefix + queries[fields["query_id"]].astype(str), "language": language, "domain": domain,
                              "text": queries[fields["query"]], "task_type": spec.get("task_type", "question_answering"),
                              **extra.get("queries", {})}),
        qrels=pd.DataFrame({
            "query_id": prefix + qrels[fields["qrels_query_id"]].astype(str),
            "doc_id": prefix + qrels[fields["qrels_doc_id"]].astype(str),
            "score": qrels[fields["relevance"]].astype(int),
        }),
    )
    return validate_evaluation_set(evaluation, label)


def retrieval_to_pairs(evaluation: EvaluationSet, source: str, task_type: str = "question_answering") -> pd.DataFrame:
    """A corpus/queries/qrels set (e.g. MIRACL train) turned into training pairs: one per positive."""
    merged = evaluation.qrels[evaluation.qrels["score"] > 0].merge(evaluation.queries, on="query_id").merge(
        evaluation.corpus.rename(columns={"text": "positive", "language": "passage_language"}), on="doc_id"
    )
    frame = pd.DataFrame({
        "pair_id": source + ":" + merged["query_id"] + ":" + merged["doc_id"],
        "query_id": source + ":" + merged["query_id"],
        "query": merged["text"], "positive": merged["positive"], "language": merged["language"],
        "passage_language": merged["passage_language"], "task_type": task_type, "source": source,
    })
    return validate_pairs(frame, source)
