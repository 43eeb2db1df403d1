"""Evaluation through mteb, on tasks built from local held-out data.

Each scope (evaluation_scopes.py) becomes one mteb task: an AbsTaskRetrieval with one hf subset per
(domain, query language), or an AbsTaskBitextMining for the bitext scope, so the scores (nDCG@10,
recall@20, F1, ...) are computed by mteb's own evaluators and written in mteb's result format,
which leaderboards and `mteb.load_results` read. mteb's saved predictions (each query's ranking,
each sentence's nearest neighbour) give the per-query scores that the paired bootstrap resamples."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset

from .artifact_io import atomic_directory
from .evaluation_scopes import SCOPES, Subset, sample_evaluation  # noqa: F401  (sample_evaluation: re-exported)
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
REPORTED_METRICS = ("ndcg_at_10", "recall_at_100", "mrr_at_10", "ndcg_at_1")  # official mteb tasks
SCOPE_K_VALUES = (1, 10, 20)  # what SCOPE_METRICS need: each extra cutoff costs mteb a set of nAUC fits per subset
SCOPE_METRICS = ("ndcg_at_10", "recall_at_20", "mrr_at_10", "ndcg_at_1")  # the project's scopes (ranked to depth 20)


def evaluation_fingerprint(evaluation: EvaluationSet, settings: dict | None = None) -> str:
    """Identifies exactly what a model is scored on (queries, corpus, judgements, and the settings
    that turn them into scores: scope rules, evaluation length and precision): scores with the same
    fingerprint are comparable, others are not."""
    digest = hashlib.sha256()
    for frame in (evaluation.queries, evaluation.corpus, evaluation.qrels):
        frame = frame.astype(str)
        digest.update(pd.util.hash_pandas_object(frame.sort_values(list(frame.columns)).reset_index(drop=True), index=False).values.tobytes())
    digest.update(json.dumps(settings or {}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


class _PredictionsKeptInMemory:
    """mteb re-reads and rewrites a task's whole predictions file after every subset, so writing
    costs grow with the square of the subsets (28 per scope here); the task keeps them in memory
    instead and `evaluate_subsets` writes each task's file once, in mteb's format."""

    kept_predictions: dict  # set per task class: hf_subset -> split -> predictions

    def _save_task_predictions(self, predictions, model, prediction_folder, hf_split, hf_subset) -> None:
        self.kept_predictions.setdefault(hf_subset, {})[hf_split] = predictions


def _task_metadata(name: str, task_type: str, subsets: dict[str, str], main_score: str, description: str):
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(
        name=name,
        description=description,
        reference=None,
        dataset={"path": f"local/{name}", "revision": "local"},
        type=task_type,
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs={subset: [MTEB_LANGUAGES[lang]] for subset, lang in subsets.items()},
        main_score=main_score,
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation=None,
    )


def task_name(scope: str) -> str:
    """"held-out task" -> "RetrofitHeldOutTask": the mteb task that scores one scope."""
    return "Retrofit" + "".join(part.capitalize() for part in scope.replace("-", " ").split())


def _check_languages(subsets: list[Subset]) -> None:
    unknown = sorted({s.language for s in subsets} - set(MTEB_LANGUAGES))
    if unknown:
        raise ValueError(f"no mteb language code known for {unknown}; add it to MTEB_LANGUAGES in {__file__}")


def build_retrieval_task(scope: str, subsets: list[Subset]):
    """An mteb retrieval task whose data is `subsets` (one scope), already loaded: one hf subset
    per domain and query language, its corpus and judgements as the scope defines them."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    _check_languages(subsets)
    metadata = _task_metadata(task_name(scope), "Retrieval", {s.name: s.language for s in subsets}, "ndcg_at_10",
                              f"retrofit_pipeline's {scope} retrieval scope, built from local held-out data.")
    # Rankings are kept to depth 20 (nDCG@10, recall@20): the saved predictions (every query's
    # ranking) grow with the depth, and the per-query scores need no more.
    task_class = type(metadata.name, (_PredictionsKeptInMemory, AbsTaskRetrieval),
                      {"metadata": metadata, "k_values": SCOPE_K_VALUES, "kept_predictions": {}})
    task = task_class()
    task.dataset = {
        s.name: {"test": {
            "corpus": Dataset.from_dict({"id": s.corpus["doc_id"].tolist(), "text": s.corpus["text"].tolist(), "title": [""] * len(s.corpus)}),
            "queries": Dataset.from_dict({"id": s.queries["query_id"].tolist(), "text": s.queries["text"].tolist()}),
            "relevant_docs": {qid: dict(zip(group["doc_id"], group["score"].astype(int))) for qid, group in s.qrels.groupby("query_id")},
            "top_ranked": None,
        }}
        for s in subsets
    }
    task.data_loaded = True
    return task


def build_bitext_task(scope: str, subsets: list[Subset]):
    """An mteb bitext-mining task: per language, sentence1 (the translations) against sentence2
    (their English originals), the i-th of each a pair."""
    from datasets import DatasetDict
    from mteb.abstasks.text.bitext_mining import AbsTaskBitextMining

    _check_languages(subsets)
    metadata = _task_metadata(task_name(scope), "BitextMining", {s.name: s.language for s in subsets}, "f1",
                              "retrofit_pipeline's bitext-mining scope (held-out translated messages -> English), from local data.")
    task_class = type(metadata.name, (_PredictionsKeptInMemory, AbsTaskBitextMining), {"metadata": metadata, "kept_predictions": {}})
    task = task_class()
    task.dataset = {s.name: DatasetDict({"test": Dataset.from_dict({"sentence1": s.pairs["text"].tolist(), "sentence2": s.pairs["target"].tolist()})})
                    for s in subsets}
    task.data_loaded = True
    return task


def evaluate_subsets(encoder, subsets: list[Subset], results_dir: Path, batch_size: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores `encoder` (a ScoringEncoder) with mteb on every subset, one mteb task per scope.
    Writes mteb's result JSON and predictions under `results_dir` (atomically). Returns (one row per
    scope and subset with mteb's metrics, one row per query with its score: nDCG@10 for retrieval,
    its share of mteb's F1 for bitext mining, so that the mean of a subset is mteb's number)."""
    import mteb
    from mteb.cache import ResultCache

    by_scope: dict[str, list[Subset]] = {}
    for subset in subsets:
        by_scope.setdefault(subset.scope, []).append(subset)
    tasks = [build_bitext_task(scope, members) if members[0].pairs is not None else build_retrieval_task(scope, members)
             for scope, members in by_scope.items()]
    logging.getLogger("mteb").setLevel(logging.WARNING)
    rows, per_query = [], []
    with atomic_directory(Path(results_dir)) as tmp:
        result = mteb.evaluate(encoder, tasks, cache=ResultCache(cache_path=tmp), overwrite_strategy="always",
                               prediction_folder=tmp / "predictions", encode_kwargs={"batch_size": batch_size}, show_progress_bar=False)
        for task, task_result in zip(tasks, result.task_results):
            scope = next(scope for scope in by_scope if task_name(scope) == task.metadata.name)
            members = {s.name: s for s in by_scope[scope]}
            predictions = write_predictions(task, encoder, tmp / "predictions")
            for entry in task_result.scores["test"]:
                subset = members[entry["hf_subset"]]
                if subset.pairs is not None:
                    values = bitext_f1_shares(predictions[subset.name]["test"]["sentence1-sentence2"])
                    if abs(float(np.mean(values)) - float(entry["f1"])) > 1e-6:
                        raise AssertionError(f"per-sentence F1 shares of {scope}/{subset.name} do not add up to mteb's F1")
                    metrics = {"main_score": float(entry["f1"]), "accuracy": float(entry["accuracy"])}
                    scores = dict(zip(subset.pairs["query_id"], values))
                else:
                    metrics = {"main_score": float(entry["ndcg_at_10"]), **{m: float(entry[m]) for m in SCOPE_METRICS}}
                    scores = per_query_ndcg(predictions[subset.name]["test"], subset.qrels)
                rows.append({"scope": scope, "domain": subset.domain, "language": subset.language,
                             "metric": "f1" if subset.pairs is not None else "ndcg_at_10", "queries": subset.size, **metrics})
                per_query += [{"scope": scope, "domain": subset.domain, "language": subset.language, "query_id": query_id, "score": value}
                              for query_id, value in scores.items()]
    order = {scope: i for i, scope in enumerate(SCOPES)}
    def ordered(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        return frame.sort_values(keys, key=lambda c: c.map(order) if c.name == "scope" else c).reset_index(drop=True)
    return ordered(pd.DataFrame(rows), ["scope", "domain", "language"]), ordered(pd.DataFrame(per_query), ["scope", "domain", "language", "query_id"])


def write_predictions(task, encoder, folder: Path) -> dict:
    """Writes the predictions `task` kept (mteb's predictions file, written once) and returns them."""
    if not task.kept_predictions:
        raise RuntimeError(f"mteb saved no predictions for {task.metadata.name}: has its _save_task_predictions hook changed?")
    predictions = {"mteb_model_meta": {"model_name": encoder.mteb_model_meta.name, "revision": encoder.mteb_model_meta.revision},
                   **task.kept_predictions}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / task.prediction_file_name).write_text(json.dumps(predictions), encoding="utf-8")
    return predictions


def bitext_f1_shares(neighbours: list[dict]) -> list[float]:
    """Each sentence's share of mteb's bitext-mining F1 (sklearn's support-weighted F1, every
    sentence the gold of exactly one query): F1 of label i = 2 / (1 + times i was predicted) when
    sentence i found its own pair, else 0; their mean is mteb's F1."""
    predicted = [int(entry["corpus_id"]) for entry in neighbours]
    times = np.bincount(predicted, minlength=len(predicted))
    return [2.0 / (1.0 + times[i]) if predicted[i] == i else 0.0 for i in range(len(predicted))]


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
