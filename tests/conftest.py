"""Builds, once per test session, a tiny encoder, small local datasets in Hugging Face file
formats, and a preset pointing at them; RETROFIT_CONFIG is set before the Dagster definitions load."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SESSION_DIR = Path(tempfile.mkdtemp(prefix="retrofit-tests-"))


def _write_fixture_world(root: Path) -> Path:
    from synthetic import evaluation_frames, training_pairs

    from retrofit_pipeline.tiny_model import build_tiny_encoder

    pairs = training_pairs()
    corpus, queries, qrels = evaluation_frames()
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    pairs.to_json(data / "pairs.jsonl", orient="records", lines=True, force_ascii=False)
    # Evaluation data per language, MIRACL-style: corpus / queries / qrels as separate files.
    eval_sources = []

    def add_source(name: str, language: str, corpus, queries, qrels, **spec) -> None:
        corpus.drop(columns="language").to_parquet(data / f"{name}-corpus-{language}.parquet")
        queries.drop(columns="language").to_json(data / f"{name}-queries-{language}.jsonl", orient="records", lines=True, force_ascii=False)
        qrels.drop(columns="language").to_json(data / f"{name}-qrels-{language}.jsonl", orient="records", lines=True)
        eval_sources.append({
            "kind": "hf_retrieval", "language": language,
            "corpus": {"path": "parquet", "data_files": str(data / f"{name}-corpus-{language}.parquet")},
            "queries": {"path": "json", "data_files": str(data / f"{name}-queries-{language}.jsonl")},
            "qrels": {"path": "json", "data_files": str(data / f"{name}-qrels-{language}.jsonl")},
            **spec,
        })

    # In-domain, aligned across de/fr/ru by identity (pooled and cross-lingual scopes, pivot de).
    for language in sorted(corpus["language"].unique()):
        add_source("synthetic", language, corpus[corpus.language == language], queries[queries.language == language],
                   qrels[qrels.language == language], domain="synthetic", task_type="summary_retrieval", fields={"identity": "identity"})
    # A held-out task: question_answering queries of the same domain, a task the mixture never trains on.
    qa_corpus, qa_queries, qa_qrels = evaluation_frames(count=30, seed=4)
    add_source("qa", "de", qa_corpus.assign(language="de"), qa_queries.assign(language="de"), qa_qrels.assign(language="de"),
               domain="synthetic", task_type="question_answering")
    # Bitext mining: each French "message" must find its counterpart among the others of its language.
    bt_corpus, bt_queries, bt_qrels = evaluation_frames(count=24, seed=5)
    add_source("bitext", "fr", bt_corpus.assign(language="fr"), bt_queries.assign(language="fr"), bt_qrels.assign(language="fr"),
               domain="ui", task_type="bitext")
    # A domain training never sees (leave-one-domain-out): the forgetting check scores it. Its rows
    # are in three scripts but filed as one language, German, to keep the test set small.
    ood_corpus, ood_queries, ood_qrels = evaluation_frames(count=60, seed=3)
    add_source("ood", "de", ood_corpus.assign(language="de"), ood_queries.assign(language="de"), ood_qrels.assign(language="de"),
               domain="ood")
    texts = pairs["query"].tolist() + pairs["positive"].tolist() + corpus["text"].tolist() + queries["query"].tolist()
    model_dir = build_tiny_encoder(texts, root / "tiny-encoder")
    preset = {
        "name": "tiny",
        "artifacts_dir": str(root / "artifacts"),
        "raw_sources": [{
            "kind": "hf_pairs", "source": "synthetic", "path": "json", "data_files": str(data / "pairs.jsonl"),
            "query_field": "query", "positive_field": "positive", "language_field": "language", "task_type_field": "task_type",
        }],
        "incoming_dir": str(root / "incoming"),
        "data_scales": {"small": 96, "large": 192},
        "default_scale": "small",
        "base_model": str(model_dir),
        "negatives": {"strategy": "dense", "num_negatives": 2, "range_min": 0, "range_max": 10, "relative_margin": 0.01},
        "training": {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "temperature": 0.05, "max_query_length": 32,
                     "max_passage_length": 48, "save_every_steps": 4, "warmup_ratio": 0.0},
        "evaluation": {"sources": eval_sources, "max_queries_per_language": None, "batch_size": 32, "held_out_domains": ["ood"],
                       "held_out_tasks": ["question_answering"], "pivot_language": "de",
                       # The random tiny encoder may fall below its base on a small scope: the gate is tested on its
                       # own (test_promotion, test_assets, test_cli's strict run), not in every test that trains.
                       "forgetting_margin": 1.0},
        "encode_batch_size": 32,
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset, allow_unicode=True, sort_keys=False))
    return path


def pytest_configure(config):
    os.environ["RETROFIT_CONFIG"] = str(_write_fixture_world(SESSION_DIR))
    os.environ["DAGSTER_HOME"] = str(SESSION_DIR / "dagster_home")
    (SESSION_DIR / "dagster_home").mkdir(exist_ok=True)
    (SESSION_DIR / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
