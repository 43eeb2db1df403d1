"""The evaluation's scopes, sampling and paired intervals, on hand-built data whose right answers are known."""

import numpy as np
import pandas as pd
import pytest

from retrofit_pipeline.comparison import paired_comparison, scope_means
from retrofit_pipeline.evaluation import bitext_f1_shares
from retrofit_pipeline.evaluation_scopes import ScopeRules, build_subsets, sample_evaluation, split_dev
from retrofit_pipeline.schema import EvaluationSet

RULES = ScopeRules(held_out_domains=("wiki",), held_out_tasks=("question_answering",), pivot_language="en")


def _set() -> EvaluationSet:
    """Documents 1..4 of domain "docs" in en/de/fr (doc "de:3" has no French version), a German
    FAQ question on document 4, an out-of-domain wiki pair and two bitext pairs."""
    corpus, queries, qrels = [], [], []
    for language in ("en", "de", "fr"):
        for number in (1, 2, 3, 4):
            if (language, number) == ("fr", 3):
                continue
            corpus.append({"doc_id": f"{language}:{number}", "language": language, "domain": "docs", "text": f"{language} text {number}",
                           "identity": f"docs:{number}"})
            if number < 4:
                queries.append({"query_id": f"q:{language}:{number}", "language": language, "domain": "docs", "text": f"{language} q {number}",
                                "identity": f"docs:{number}", "task_type": "title_retrieval"})
                qrels.append({"query_id": f"q:{language}:{number}", "doc_id": f"{language}:{number}", "score": 1})
    queries.append({"query_id": "faq:de:4", "language": "de", "domain": "docs", "text": "wie geht 4?", "identity": "docs:4",
                    "task_type": "question_answering"})
    qrels.append({"query_id": "faq:de:4", "doc_id": "de:4", "score": 1})
    corpus.append({"doc_id": "wiki:en:1", "language": "en", "domain": "wiki", "text": "an article", "identity": None})
    queries.append({"query_id": "q:wiki:1", "language": "en", "domain": "wiki", "text": "a description", "identity": None,
                    "task_type": "summary_retrieval"})
    qrels.append({"query_id": "q:wiki:1", "doc_id": "wiki:en:1", "score": 1})
    for number in (1, 2):
        corpus.append({"doc_id": f"de:en:{number}", "language": "de", "domain": "ui", "text": f"english message {number}", "identity": f"ui:{number}"})
        queries.append({"query_id": f"q:ui:de:{number}", "language": "de", "domain": "ui", "text": f"deutsche Meldung {number}",
                        "identity": f"ui:{number}", "task_type": "bitext"})
        qrels.append({"query_id": f"q:ui:de:{number}", "doc_id": f"de:en:{number}", "score": 1})
    return EvaluationSet(pd.DataFrame(corpus), pd.DataFrame(queries), pd.DataFrame(qrels))


def _subset(subsets, scope, domain, language):
    return next(s for s in subsets if (s.scope, s.domain, s.language) == (scope, domain, language))


def test_every_scope_is_built_with_its_own_corpus_and_judgements():
    subsets = build_subsets(_set(), RULES)
    assert {(s.scope, s.domain) for s in subsets} == {("in-domain", "docs"), ("held-out task", "docs"), ("out-of-domain", "wiki"),
                                                        ("pooled", "docs"), ("cross-lingual", "docs"), ("bitext", "ui")}
    # In-domain: German queries against the German documents only, their own document relevant.
    german = _subset(subsets, "in-domain", "docs", "de")
    assert set(german.corpus["doc_id"]) == {"de:1", "de:2", "de:3", "de:4"} and len(german.qrels) == 3
    # The held-out task is scored on its own, and is not part of in-domain.
    faq = _subset(subsets, "held-out task", "docs", "de")
    assert faq.queries["query_id"].tolist() == ["faq:de:4"] and "faq:de:4" not in set(german.queries["query_id"])
    # Pooled: one corpus of every language; every translation of the judged document is relevant.
    pooled = _subset(subsets, "pooled", "docs", "de")
    assert len(pooled.corpus) == 11
    assert set(pooled.qrels[pooled.qrels["query_id"] == "q:de:1"]["doc_id"]) == {"en:1", "de:1", "fr:1"}
    assert set(pooled.qrels[pooled.qrels["query_id"] == "q:de:3"]["doc_id"]) == {"en:3", "de:3"}
    # Cross-lingual X -> English: the English corpus, the English version relevant; no English queries.
    cross = _subset(subsets, "cross-lingual", "docs", "fr")
    assert set(cross.corpus["doc_id"]) == {"en:1", "en:2", "en:3", "en:4"}
    assert set(zip(cross.qrels["query_id"], cross.qrels["doc_id"])) == {("q:fr:1", "en:1"), ("q:fr:2", "en:2")}
    assert not any(s.scope == "cross-lingual" and s.language == "en" for s in subsets)
    # A query without an identity (the wiki pair) has no translation to judge: not pooled.
    assert not any(s.scope == "pooled" and s.domain == "wiki" for s in subsets)
    bitext = _subset(subsets, "bitext", "ui", "de")
    assert bitext.pairs[["text", "target"]].values.tolist() == [["deutsche Meldung 1", "english message 1"], ["deutsche Meldung 2", "english message 2"]]


def test_the_dev_split_takes_every_scope_by_identity_and_is_never_scored():
    evaluation = _set()
    scored, dev = split_dev(evaluation, RULES, dev_fraction=0.5)
    assert dev is not None and set(dev.queries["query_id"]).isdisjoint(scored.queries["query_id"])
    assert len(dev.queries) + len(scored.queries) == len(evaluation.queries)
    # By identity, whatever the scope: a document's queries are on one side in every language.
    identities = lambda frame: set(frame["identity"].dropna())  # noqa: E731
    assert identities(dev.queries).isdisjoint(identities(scored.queries))
    # Every scope can have a dev part: with enough identities, the held-out task, bitext and the held-out domain do too.
    rows, qrels = [], []
    for number in range(40):
        for domain, task in (("docs", "title_retrieval"), ("docs", "question_answering"), ("ui", "bitext"), ("wiki", "summary_retrieval")):
            rows.append({"query_id": f"{domain}:{task}:{number}", "language": "de", "domain": domain, "text": f"q {number}",
                         "identity": f"{domain}:{task}:{number}", "task_type": task})
            qrels.append({"query_id": f"{domain}:{task}:{number}", "doc_id": "d", "score": 1})
    many = EvaluationSet(pd.DataFrame([{"doc_id": "d", "language": "de", "domain": "docs", "text": "t"}]), pd.DataFrame(rows), pd.DataFrame(qrels))
    scored, dev = split_dev(many, RULES, dev_fraction=0.25)
    assert set(dev.queries["task_type"]) == {"title_retrieval", "question_answering", "bitext", "summary_retrieval"}
    assert 0.1 < len(dev.queries) / len(many.queries) < 0.4


def test_sampling_keeps_every_judged_document_and_draws_the_same_documents_in_every_language():
    rows = []
    for language in ("de", "fr"):
        for number in range(50):
            rows.append({"doc_id": f"{language}:{number}", "language": language, "domain": "docs", "text": f"{language} {number}",
                         "identity": f"docs:{number}"})
    corpus = pd.DataFrame(rows)
    queries = pd.DataFrame([{"query_id": f"q:{d}", "language": d.split(":")[0], "domain": "docs", "text": f"q {d}",
                             "identity": f"docs:{d.split(':')[1]}", "task_type": "title_retrieval"} for d in corpus["doc_id"]])
    qrels = pd.DataFrame({"query_id": queries["query_id"], "doc_id": corpus["doc_id"], "score": 1})
    sample = sample_evaluation(EvaluationSet(corpus, queries, qrels), max_queries=5, max_corpus=12, seed=7)
    per_language = sample.corpus.groupby("language")["identity"].agg(set)
    assert sample.corpus.groupby("language").size().to_dict() == {"de": 12, "fr": 12}
    assert per_language["de"] == per_language["fr"]  # identity order: translations sit in the same sample
    judged = set(qrels[qrels["query_id"].isin(sample.queries["query_id"])]["doc_id"])
    assert judged <= set(sample.corpus["doc_id"]) and len(sample.queries) == 10
    assert set(sample.qrels["query_id"]) == set(sample.queries["query_id"])
    # A cap below the number of judged documents keeps them all.
    assert len(sample_evaluation(EvaluationSet(corpus, queries, qrels), max_queries=5, max_corpus=2, seed=7).corpus) == 10


def test_paired_bootstrap_finds_a_paired_effect_that_unpaired_resampling_would_miss():
    rng = np.random.default_rng(0)
    hardness = rng.uniform(0, 1, 300)  # queries differ far more from each other than the two models do
    base = pd.DataFrame({"scope": "in-domain", "domain": "d", "language": "de", "query_id": [f"q{i}" for i in range(300)], "score": hardness})
    tuned = base.assign(score=np.clip(hardness + 0.02 + rng.normal(0, 0.005, 300), 0, 1.5))
    means = scope_means(paired_comparison(base, tuned))["in-domain"]
    assert 0.015 < means["ci_low"] < means["gain"] < means["ci_high"] < 0.025
    # Resampling the two score lists independently gives an interval ~20x wider, across zero.
    draws = [tuned["score"].sample(300, replace=True, random_state=i).mean() - base["score"].sample(300, replace=True, random_state=1000 + i).mean()
             for i in range(300)]
    assert np.quantile(draws, 0.025) < 0 < np.quantile(draws, 0.975)
    assert (means["ci_high"] - means["ci_low"]) * 10 < np.quantile(draws, 0.975) - np.quantile(draws, 0.025)


def test_unpaired_score_sets_are_refused():
    base = pd.DataFrame({"scope": "pooled", "domain": "d", "language": "de", "query_id": ["q1", "q2"], "score": [0.5, 0.5]})
    with pytest.raises(ValueError, match="not on the same queries"):
        paired_comparison(base, base.assign(query_id=["q1", "q3"]))


def test_bitext_f1_shares_average_to_sklearns_weighted_f1():
    from sklearn.metrics import f1_score

    predicted = [0, 0, 2, 3, 3, 5, 1]
    shares = bitext_f1_shares([{"corpus_id": p, "score": 1.0} for p in predicted])
    assert abs(np.mean(shares) - f1_score(list(range(7)), predicted, average="weighted", zero_division=0)) < 1e-12


def test_caps_may_differ_per_domain():
    from retrofit_pipeline.evaluation_scopes import cap_for

    evaluation = _set()
    sample = sample_evaluation(evaluation, max_queries={"default": 1, "wiki": None}, max_corpus={"default": 2, "wiki": None}, seed=1)
    docs = sample.queries[sample.queries["domain"] == "docs"]
    assert docs.groupby(["language", "task_type"]).size().max() == 1
    assert sample.corpus[sample.corpus["domain"] == "docs"].groupby("language").size().max() == 2
    assert cap_for({"default": 5, "wiki": None}, "wiki") is None and cap_for(7, "anything") == 7


def _deep_translations(languages: int = 6, documents: int = 60) -> EvaluationSet:
    """English has every document; each other language a different small share of them, so their
    documents sit anywhere in English's hash order (as a small language's pages do)."""
    corpus, queries, qrels = [], [], []
    for number in range(documents):
        corpus.append({"doc_id": f"en:{number}", "language": "en", "domain": "docs", "text": f"en {number}", "identity": f"docs:{number}"})
    for index in range(languages):
        language = f"l{index}"
        for number in range(index, documents, languages):  # disjoint identities per language
            corpus.append({"doc_id": f"{language}:{number}", "language": language, "domain": "docs", "text": f"{language} {number}",
                           "identity": f"docs:{number}"})
            queries.append({"query_id": f"q:{language}:{number}", "language": language, "domain": "docs", "text": f"{language} q {number}",
                            "identity": f"docs:{number}", "task_type": "title_retrieval"})
            qrels.append({"query_id": f"q:{language}:{number}", "doc_id": f"{language}:{number}", "score": 1})
    return EvaluationSet(pd.DataFrame(corpus), pd.DataFrame(queries), pd.DataFrame(qrels))


def test_every_language_version_of_a_judged_document_is_in_the_corpus_before_the_cap_fills():
    sample = sample_evaluation(_deep_translations(), max_queries=5, max_corpus=8, seed=3)
    dropped = {}
    subsets = build_subsets(sample, ScopeRules(pivot_language="en"), ("pooled", "cross-lingual"), dropped=dropped)
    # Every sampled query keeps its English version: in the pooled corpus and as the cross-lingual target.
    english = set(sample.corpus.loc[sample.corpus["language"] == "en", "identity"])
    assert set(sample.queries["identity"]) <= english
    cross = [s for s in subsets if s.scope == "cross-lingual"]
    assert sum(len(s.queries) for s in cross) == len(sample.queries) and dropped == {"pooled": 0, "cross-lingual": 0}
    for subset in (s for s in subsets if s.scope == "pooled"):
        relevant = subset.qrels.groupby("query_id").size()
        assert (relevant == 2).all() and len(relevant) == len(subset.queries)  # its own version and the English one
    # The cap still holds where nothing more is judged, and every judged document is there.
    assert sample.corpus.groupby("language").size().drop("en").max() <= 8


def test_a_query_without_a_pivot_version_is_dropped_from_cross_lingual_and_counted():
    evaluation = _deep_translations(languages=2, documents=10)
    corpus = evaluation.corpus[~((evaluation.corpus["language"] == "en") & (evaluation.corpus["identity"] == "docs:0"))]
    dropped = {}
    subsets = build_subsets(EvaluationSet(corpus, evaluation.queries, evaluation.qrels), ScopeRules(pivot_language="en"), dropped=dropped)
    cross = {q for s in subsets if s.scope == "cross-lingual" for q in s.queries["query_id"]}
    assert "q:l0:0" not in cross and dropped["cross-lingual"] == 1 and dropped["pooled"] == 0
    from retrofit_pipeline.evaluation_scopes import relevance_summary

    summary = relevance_summary(subsets).set_index(["scope", "subset"])
    assert summary.loc[("pooled", "docs.l0"), "relevant_per_query"] == pytest.approx((1 + 2 * 4) / 5)
    assert summary.loc[("cross-lingual", "docs.l1"), "relevant_per_query"] == 1.0


def test_a_scope_mean_weighs_queries_so_a_one_query_subset_cannot_carry_it():
    rng = np.random.default_rng(1)
    base = pd.DataFrame({"scope": "cross-lingual", "domain": "d", "language": ["uk"] + ["de"] * 200,
                         "query_id": [f"q{i}" for i in range(201)], "score": rng.uniform(0.2, 0.8, 201)})
    tuned = base.copy()
    tuned.loc[0, "score"] += 0.57  # the 1-query subset at a large gain
    tuned.loc[1:, "score"] = np.clip(base.loc[1:, "score"] + rng.normal(0, 0.1, 200), 0, 1)  # the 200-query subset: noise around zero
    comparison = paired_comparison(base, tuned)
    mean = scope_means(comparison)["cross-lingual"]
    subsets = comparison[comparison["domain"] != "mean"].set_index("language")
    assert mean["gain"] == pytest.approx((0.57 + 200 * subsets.loc["de", "gain"]) / 201)
    assert mean["ci_low"] < 0 < mean["ci_high"]  # equal weights would give a narrow interval around +0.28
    assert mean["ci_high"] - mean["ci_low"] > 0.9 * (subsets.loc["de", "ci_high"] - subsets.loc["de", "ci_low"])
    assert mean["base"] == pytest.approx(base["score"].mean()) and mean["retrofitted"] == pytest.approx(tuned["score"].mean())
    from retrofit_pipeline.comparison import comparison_markdown

    assert "Scope means weigh queries" in comparison_markdown(comparison, means_only=True)
    assert "cross-lingual 1 subsets, 1 of 201 queries" in comparison_markdown(comparison, means_only=True)
