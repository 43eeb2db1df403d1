"""Retrieval evaluation through mteb, on retrieval tasks built from local data.

The held-out set becomes an mteb AbsTaskRetrieval with one subset per (domain, language), so the
scores (nDCG@10, recall@100, ...) are computed by mteb's own evaluator and written in mteb's result
format, which leaderboards and `mteb.load_results` read. mteb's saved predictions (each query's
ranking) give the per-query nDCG@10 that the paired bootstrap intervals resample."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset

from .artifact_io import atomic_directory
from .schema import EvaluationSet

# ISO 639-1 -> mteb's ISO 639-3 + script code.
MTEB_LANGUAGES = {
    "af": "afr-Latn", "an": "arg-Latn", "ar": "ara-Arab", "as": "asm-Beng", "az": "aze-Latn", "be": "bel-Cyrl", "be-latn": "bel-Latn",
    "bg": "bul-Cyrl", "bn": "ben-Beng", "bs": "bos-Latn", "ca": "cat-Latn", "cs": "ces-Latn", "cy": "cym-Latn", "da": "dan-Latn",
    "de": "deu-Latn", "dz": "dzo-Tibt", "el": "ell-Grek", "en": "eng-Latn", "eo": "epo-Latn", "es": "spa-Latn", "et": "est-Latn",
    "eu": "eus-Latn", "fa": "fas-Arab", "fi": "fin-Latn", "fr": "fra-Latn", "ga": "gle-Latn", "gd": "gla-Latn", "gl": "glg-Latn",
    "gu": "guj-Gujr", "he": "heb-Hebr", "hi": "hin-Deva", "hr": "hrv-Latn", "hu": "hun-Latn", "hy": "hye-Armn", "id": "ind-Latn",
    "is": "isl-Latn", "it": "ita-Latn", "ja": "jpn-Jpan", "ka": "kat-Geor", "kk": "kaz-Cyrl", "km": "khm-Khmr", "kn": "kan-Knda",
    "ko": "kor-Hang", "lt": "lit-Latn", "lv": "lav-Latn", "mk": "mkd-Cyrl", "ml": "mal-Mlym", "mn": "mon-Cyrl", "mr": "mar-Deva",
    "ms": "msa-Latn", "my": "mya-Mymr", "nb": "nob-Latn", "ne": "nep-Deva", "nl": "nld-Latn", "nn": "nno-Latn", "no": "nor-Latn",
    "oc": "oci-Latn", "or": "ory-Orya", "pa": "pan-Guru", "pl": "pol-Latn", "pt": "por-Latn", "pt-br": "por-Latn", "ro": "ron-Latn",
    "ru": "rus-Cyrl", "sk": "slk-Latn", "sl": "slv-Latn", "sq": "sqi-Latn", "sr": "srp-Cyrl", "sr-latn": "srp-Latn", "sv": "swe-Latn",
    "sw": "swa-Latn", "ta": "tam-Taml", "te": "tel-Telu", "tg": "tgk-Cyrl", "th": "tha-Thai", "tr": "tur-Latn", "ug": "uig-Arab",
    "uk": "ukr-Cyrl", "vi": "vie-Latn", "xh": "xho-Latn", "yo": "yor-Latn", "zh": "zho-Hans", "zh-cn": "zho-Hans", "zh-tw": "zho-Hant",
}
REPORTED_METRICS = ("ndcg_at_10", "recall_at_100", "mrr_at_10", "ndcg_at_1")


def _task_class(name: str, subsets: dict[str, str]):
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    metadata = TaskMetadata(
        name=name,
        description="Held-out retrieval set built by retrofit_pipeline from local data.",
        reference=None,
        dataset={"path": f"local/{name}", "revision": "local"},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs={subset: [MTEB_LANGUAGES[lang]] for subset, lang in subsets.items()},
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


def subset_name(domain: str, language: str) -> str:
    return f"{domain}.{language}"


def sample_evaluation(evaluation: EvaluationSet, max_queries_per_subset: int | None, max_corpus_per_subset: int | None = None,
                      seed: int = 13) -> EvaluationSet:
    """At most `max_queries_per_subset` queries per (domain, language), drawn by seed, and, when
    `max_corpus_per_subset` is set, a corpus of every document judged for those queries plus other
    documents of the subset (drawn by seed) up to that size: distractors rather than the whole
    held-out corpus, to bound encoding time on a CPU. Every model of an experiment is scored on
    exactly this set (its fingerprint is recorded with the scores)."""
    queries, corpus = [], []
    judged = evaluation.qrels.groupby("query_id")["doc_id"].agg(set)
    for (domain, language), group in evaluation.queries.groupby(["domain", "language"], sort=True):
        if max_queries_per_subset and len(group) > max_queries_per_subset:
            group = group.sample(n=max_queries_per_subset, random_state=seed)
        queries.append(group)
        documents = evaluation.corpus[(evaluation.corpus["domain"] == domain) & (evaluation.corpus["language"] == language)]
        if max_corpus_per_subset and len(documents) > max_corpus_per_subset:
            needed = set().union(*(judged.get(q, set()) for q in group["query_id"]))
            is_needed = documents["doc_id"].isin(needed)
            others = documents[~is_needed]
            room = max(0, max_corpus_per_subset - int(is_needed.sum()))
            documents = pd.concat([documents[is_needed], others.sample(n=min(room, len(others)), random_state=seed)])
        corpus.append(documents)
    queries = pd.concat(queries).sort_index().reset_index(drop=True)
    corpus = pd.concat(corpus).sort_index().reset_index(drop=True)
    qrels = evaluation.qrels[evaluation.qrels["query_id"].isin(set(queries["query_id"])) & evaluation.qrels["doc_id"].isin(set(corpus["doc_id"]))]
    return EvaluationSet(corpus, queries, qrels.reset_index(drop=True))


def evaluation_fingerprint(evaluation: EvaluationSet) -> str:
    """Identifies exactly what a model is scored on (queries, corpus, judgements): scores with the
    same fingerprint are comparable, others are not."""
    digest = hashlib.sha256()
    for frame in (evaluation.queries, evaluation.corpus, evaluation.qrels):
        digest.update(pd.util.hash_pandas_object(frame.sort_values(list(frame.columns)).reset_index(drop=True), index=False).values.tobytes())
    return digest.hexdigest()[:16]


def build_mteb_task(evaluation: EvaluationSet, name: str = "RetrofitHeldOutRetrieval"):
    """An mteb retrieval task whose data is `evaluation`, already loaded (nothing is downloaded):
    one subset per (domain, language), its corpus the documents of that domain and language."""
    subsets = evaluation.queries[["domain", "language"]].drop_duplicates().sort_values(["domain", "language"])
    unknown = sorted(set(subsets["language"]) - set(MTEB_LANGUAGES))
    if unknown:
        raise ValueError(f"no mteb language code known for {unknown}; add it to MTEB_LANGUAGES in {__file__}")
    task = _task_class(name, {subset_name(d, lang): lang for d, lang in subsets.itertuples(index=False)})()
    relevant = evaluation.qrels.groupby("query_id")
    dataset = {}
    for domain, lang in subsets.itertuples(index=False):
        queries = evaluation.queries[(evaluation.queries["language"] == lang) & (evaluation.queries["domain"] == domain)]
        corpus = evaluation.corpus[(evaluation.corpus["language"] == lang) & (evaluation.corpus["domain"] == domain)]
        qrels = {
            qid: {row.doc_id: int(row.score) for row in relevant.get_group(qid).itertuples()}
            for qid in queries["query_id"]
        }
        dataset[subset_name(domain, lang)] = {
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


def evaluate_model(model, evaluation: EvaluationSet, results_dir: Path, batch_size: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores `model` (a SentenceTransformer) with mteb on `evaluation` (already sampled). Writes
    mteb's result JSON and its predictions under `results_dir` (atomically), and returns
    (one row per domain and language with the reported metrics, one row per query with its nDCG@10)."""
    import mteb
    from mteb.cache import ResultCache

    task = build_mteb_task(evaluation)
    logging.getLogger("mteb").setLevel(logging.WARNING)
    with atomic_directory(Path(results_dir)) as tmp:
        result = mteb.evaluate(
            model, task, cache=ResultCache(cache_path=tmp), overwrite_strategy="always", prediction_folder=tmp / "predictions",
            encode_kwargs={"batch_size": batch_size}, show_progress_bar=False,
        )
        predictions = json.loads((tmp / "predictions" / task.prediction_file_name).read_text(encoding="utf-8"))
    domain_of = {subset_name(d, lang): (d, lang) for d, lang in evaluation.queries[["domain", "language"]].drop_duplicates().itertuples(index=False)}
    rows = []
    for task_result in result.task_results:
        for entry in task_result.scores["test"]:
            domain, language = domain_of[entry["hf_subset"]]
            rows.append({"domain": domain, "language": language, **{m: float(entry[m]) for m in REPORTED_METRICS}})
    per_query = []
    for subset, splits in predictions.items():
        if subset not in domain_of:  # mteb stores the model's metadata beside the subsets
            continue
        domain, language = domain_of[subset]
        for query_id, value in per_query_ndcg(splits["test"], evaluation.qrels).items():
            per_query.append({"domain": domain, "language": language, "query_id": query_id, "ndcg_at_10": value})
    return (pd.DataFrame(rows).sort_values(["domain", "language"]).reset_index(drop=True),
            pd.DataFrame(per_query).sort_values(["domain", "language", "query_id"]).reset_index(drop=True))


def per_query_ndcg(rankings: dict[str, dict[str, float]], qrels: pd.DataFrame, k: int = 10) -> dict[str, float]:
    """nDCG@k of each ranked query (pytrec_eval's definition, as mteb uses: gain = relevance, ties
    broken by document id descending, as trec_eval does)."""
    judged = qrels[qrels["query_id"].isin(set(rankings))]
    gains = {qid: dict(zip(group["doc_id"], group["score"])) for qid, group in judged.groupby("query_id")}
    result = {}
    for query_id, ranking in rankings.items():
        relevant = gains.get(query_id, {})
        ranked = sorted(ranking.items(), key=lambda item: (-item[1], _reverse_key(item[0])))[:k]
        dcg = sum(relevant.get(doc, 0) / np.log2(rank + 2) for rank, (doc, _) in enumerate(ranked))
        ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
        idcg = sum(g / np.log2(rank + 2) for rank, g in enumerate(ideal))
        result[query_id] = dcg / idcg if idcg > 0 else 0.0
    return result


def _reverse_key(doc_id: str):
    """Sort key that orders document ids descending inside an ascending sort (trec_eval's tie-break)."""
    return [-ord(ch) for ch in doc_id] + [1]


def ndcg_from_rankings(rankings: dict[str, dict[str, float]], qrels: pd.DataFrame, k: int = 10) -> float:
    """Mean nDCG@k of given rankings (e.g. from the FAISS index) with binary/graded qrels."""
    values = per_query_ndcg(rankings, qrels, k)
    return float(np.mean(list(values.values()))) if values else 0.0
