"""Small, separable multilingual retrieval data for tests: each item has its own rare words,
so a model that learns to match queries to passages can reach a high nDCG."""

from __future__ import annotations

import random

import pandas as pd

LATIN = "bcdfghjklmnprstvz"
CYRILLIC = "бвгджзклмнпрстфх"
VOWELS = {"latin": "aeiou", "cyrillic": "аеиоу"}
LANGUAGES = {"de": "latin", "fr": "latin", "ru": "cyrillic"}


def _word(rng: random.Random, script: str) -> str:
    consonants = LATIN if script == "latin" else CYRILLIC
    return "".join(rng.choice(consonants) + rng.choice(VOWELS[script]) for _ in range(3))


def make_items(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for i in range(count):
        language = list(LANGUAGES)[i % len(LANGUAGES)]
        script = LANGUAGES[language]
        a, b, c, d = (_word(rng, script) for _ in range(4))
        items.append({
            "id": f"{language}-{seed}-{i}", "language": language,
            "query": f"{a} {b}",
            "passage": f"{c} {a} {d} {b} {_word(rng, script)}",
        })
    return items


def training_pairs(count: int = 240, seed: int = 1) -> pd.DataFrame:
    tasks = ["summary_retrieval", "inverse_cloze", "bitext"]
    return pd.DataFrame([{
        "pair_id": item["id"], "query": item["query"], "positive": item["passage"], "language": item["language"],
        "passage_language": item["language"], "task_type": tasks[i % len(tasks)], "source": "synthetic",
    } for i, item in enumerate(make_items(count, seed))])


def evaluation_frames(count: int = 60, seed: int = 2) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Items i = 3k, 3k+1, 3k+2 are one document in de, fr and ru (column "identity" = "t<k>"):
    the pooled and cross-lingual scopes judge the other languages' versions relevant."""
    items = make_items(count, seed)
    identities = [f"t{seed}-{n // len(LANGUAGES)}" for n in range(len(items))]
    corpus = pd.DataFrame({"docid": [f"d{i['id']}" for i in items], "title": "", "text": [i["passage"] for i in items],
                           "language": [i["language"] for i in items], "identity": identities})
    queries = pd.DataFrame({"query_id": [f"q{i['id']}" for i in items], "query": [i["query"] for i in items],
                            "language": [i["language"] for i in items], "identity": identities})
    qrels = pd.DataFrame({"query_id": queries["query_id"], "docid": corpus["docid"], "relevance": 1, "language": corpus["language"]})
    return corpus, queries, qrels
