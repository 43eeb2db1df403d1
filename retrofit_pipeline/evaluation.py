"""Retrieval evaluation through mteb, on retrieval tasks built from local data.

The held-out set becomes an mteb AbsTaskRetrieval with one subset per language, so the scores
(nDCG@10, recall@100, ...) are computed by mteb's own evaluator and written in mteb's result
format, which leaderboards and `mteb.load_results` read."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset

from .artifact_io import atomic_directory
from .schema import EvaluationSet

# ISO 639-1 -> mteb's ISO 639-3 + script code.
MTEB_LANGUAGES = {
    "ar": "ara-Arab", "bn": "ben-Beng", "de": "deu-Latn", "en": "eng-Latn", "es": "spa-Latn", "fa": "fas-Arab",
    "fi": "fin-Latn", "fr": "fra-Latn", "hi": "hin-Deva", "id": "ind-Latn", "it": "ita-Latn", "ja": "jpn-Jpan",
    "ko": "kor-Hang", "nl": "nld-Latn", "pl": "pol-Latn", "pt": "por-Latn", "ru": "rus-Cyrl", "sw": "swa-Latn",
    "te": "tel-Telu", "th": "tha-Thai", "tr": "tur-Latn", "uk": "ukr-Cyrl", "vi": "vie-Latn", "yo": "yor-Latn",
    "zh": "zho-Hans", "zh-cn": "zho-Hans", "zh-tw": "zho-Hant", "cs": "ces-Latn", "sv": "swe-Latn", "he": "heb-Hebr",
    "el": "ell-Grek", "hu": "hun-Latn", "ro": "ron-Latn", "da": "dan-Latn", "no": "nor-Latn", "ms": "msa-Latn",
}
REPORTED_METRICS = ("ndcg_at_10", "recall_at_100", "mrr_at_10", "ndcg_at_1")


def _task_class(name: str, languages: list[str]):
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    unknown = [lang for lang in languages if lang not in MTEB_LANGUAGES]
    if unknown:
        raise ValueError(f"no mteb language code known for {unknown}; add it to MTEB_LANGUAGES in {__file__}")
    metadata = TaskMetadata(
        name=name,
        description="Held-out retrieval set built by retrofit_pipeline from local data.",
        reference=None,
        dataset={"path": f"local/{name}", "revision": "local"},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs={lang: [MTEB_LANGUAGES[lang]] for lang in languages},
        main_score="ndcg_at_10",
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation=None,
    )

    class LocalRetrievalTask(AbsTaskRetrieval):
        pass

    LocalRetrievalTask.metadata = metadata
    LocalRetrievalTask.__name__ = name
    return LocalRetrievalTask


def build_mteb_task(evaluation: EvaluationSet, name: str = "RetrofitHeldOutRetrieval", max_queries_per_language: int | None = None, seed: int = 13):
    """An mteb retrieval task whose data is `evaluation`, already loaded (nothing is downloaded)."""
    languages = evaluation.languages
    task = _task_class(name, languages)()
    relevant = evaluation.qrels.groupby("query_id")
    dataset = {}
    for lang in languages:
        queries = evaluation.queries[evaluation.queries["language"] == lang]
        if max_queries_per_language and len(queries) > max_queries_per_language:
            queries = queries.sample(n=max_queries_per_language, random_state=seed).sort_index()
        corpus = evaluation.corpus[evaluation.corpus["language"] == lang]
        qrels = {
            qid: {row.doc_id: int(row.score) for row in relevant.get_group(qid).itertuples()}
            for qid in queries["query_id"]
        }
        dataset[lang] = {
            "test": {
                "corpus": Dataset.from_dict({"id": corpus["doc_id"].tolist(), "text": corpus["text"].tolist(), "title": [""] * len(corpus)}),
                "queries": Dataset.from_dict({"id": queries["query_id"].tolist(), "text": queries["text"].tolist()}),
                "relevant_docs": qrels,
                "top_ranked": None,
            }
        }
    task.dataset = dataset
    task.data_loaded = True
    return task


def evaluate_model(model, evaluation: EvaluationSet, results_dir: Path, batch_size: int = 64, max_queries_per_language: int | None = None) -> pd.DataFrame:
    """Scores `model` (a SentenceTransformer) with mteb; writes mteb's result JSON under
    `results_dir` (atomically) and returns one row per language with the reported metrics."""
    import mteb
    from mteb.cache import ResultCache

    task = build_mteb_task(evaluation, max_queries_per_language=max_queries_per_language)
    logging.getLogger("mteb").setLevel(logging.WARNING)
    with atomic_directory(Path(results_dir)) as tmp:
        result = mteb.evaluate(
            model, task, cache=ResultCache(cache_path=tmp), overwrite_strategy="always",
            encode_kwargs={"batch_size": batch_size}, show_progress_bar=False,
        )
    rows = []
    for task_result in result.task_results:
        for entry in task_result.scores["test"]:
            rows.append({"language": entry["hf_subset"], **{m: float(entry[m]) for m in REPORTED_METRICS}})
    return pd.DataFrame(rows).sort_values("language").reset_index(drop=True)


def ndcg_from_rankings(rankings: dict[str, dict[str, float]], qrels: pd.DataFrame, k: int = 10) -> float:
    """Mean nDCG@k of given rankings (e.g. from the FAISS index) with binary/graded qrels."""
    gains = qrels.groupby("query_id").apply(lambda g: dict(zip(g["doc_id"], g["score"])), include_groups=False).to_dict()
    scores = []
    for query_id, ranking in rankings.items():
        relevant = gains.get(query_id, {})
        ranked = sorted(ranking.items(), key=lambda item: -item[1])[:k]
        dcg = sum(relevant.get(doc, 0) / np.log2(rank + 2) for rank, (doc, _) in enumerate(ranked))
        ideal = sorted(relevant.values(), reverse=True)[:k]
        idcg = sum(g / np.log2(rank + 2) for rank, g in enumerate(ideal))
        scores.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(scores)) if scores else 0.0
