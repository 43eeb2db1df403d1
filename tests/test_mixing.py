"""Deduplication, evaluation-leakage removal and mixture policies."""

import pandas as pd
import pytest

from retrofit_pipeline.dedup import MinHasher, near_duplicate_groups, normalize_text
from retrofit_pipeline.mixing import clean_pool, sample_mixture
from retrofit_pipeline.schema import EvaluationSet


def _pool():
    rows = []
    for i in range(60):
        task = ["summary_retrieval", "bitext", "inverse_cloze"][i % 3]
        language = ["de", "ru", "ja", "en"][i % 4]
        rows.append({"pair_id": f"p{i}", "query": f"query number {i} about topic {i * 7}", "positive": f"passage {i} explains topic {i * 7} in detail, with background, history, examples and a short summary of related work",
                     "language": language, "passage_language": language, "task_type": task, "domain": "unit", "source": "unit"})
    frame = pd.DataFrame(rows)
    exact = frame.iloc[[0]].assign(pair_id="dup-exact", query="Query number 0, about topic 0!")  # same after normalization
    near = frame.iloc[[1]].assign(pair_id="dup-near", positive="passage 1 explains topic 7 in detail, with background, history, examples and a short summary of related works")
    leak = frame.iloc[[2]].assign(pair_id="leak", query="what does the held-out query say")
    return pd.concat([frame, exact, near, leak], ignore_index=True)


def _evaluation():
    # A BEIR/MIRACL-style corpus: d1 is relevant for the evaluation query; d2 is just corpus text,
    # which training may share (MIRACL train and dev use one corpus).
    return EvaluationSet(
        corpus=pd.DataFrame({"doc_id": ["d1", "d2"], "language": ["en", "en"], "domain": "unit",
                             "text": ["an evaluation passage nobody trains on", "passage 3 explains topic 21 in detail, with background, "
                                      "history, examples and a short summary of related work"]}),
        queries=pd.DataFrame({"query_id": ["q1"], "language": ["en"], "domain": "unit", "text": ["What does the held-out query say?"]}),
        qrels=pd.DataFrame({"query_id": ["q1"], "doc_id": ["d1"], "score": [1]}),
    )


def test_normalization_ignores_case_punctuation_and_width():
    assert normalize_text("Ｈｅｌｌｏ,  World!") == normalize_text("hello world")


def test_near_duplicates_found_across_scripts():
    hasher = MinHasher()
    texts = ["ディレクトリの内容をリスト表示する", "ディレクトリの内容をリスト表示する。", "ファイルをコピーする別の文章です"]
    groups = near_duplicate_groups(hasher.signatures(texts), 0.8)
    assert groups == [0, 0, 2]


def _python_near_duplicate_groups(signatures, threshold, bands=16):
    """The definition, one row at a time: the first earlier representative sharing a band and
    agreeing on at least `threshold` of the signature."""
    rows_per_band = signatures.shape[1] // bands
    representative = list(range(len(signatures)))
    for i in range(len(signatures)):
        for j in range(i):
            shares_band = any((signatures[i, b * rows_per_band:(b + 1) * rows_per_band] == signatures[j, b * rows_per_band:(b + 1) * rows_per_band]).all()
                              for b in range(bands))
            if shares_band and representative[j] == j and (signatures[i] == signatures[j]).mean() >= threshold:
                representative[i] = j
                break
    return representative


def test_vectorized_near_duplicates_and_matches_follow_the_row_by_row_definition(monkeypatch):
    import numpy as np

    from retrofit_pipeline import dedup

    rng = np.random.default_rng(5)
    originals = rng.integers(0, 50, size=(40, 64), dtype=np.uint64)  # few distinct values: many band collisions
    rows = [originals]
    for changed in (2, 4, 6, 9, 20):  # copies that differ in a few positions: chains of near-duplicates
        copies = originals[rng.integers(0, 40, size=30)].copy()
        for row in copies:
            row[rng.choice(64, size=changed, replace=False)] = rng.integers(50, 100, size=changed, dtype=np.uint64)
        rows.append(copies)
    signatures = np.concatenate(rows)[rng.permutation(190)]
    monkeypatch.setattr(dedup, "_PAIRS_PER_BLOCK", 7)  # many blocks, rows split across none
    for threshold in (0.8, 0.9):
        assert near_duplicate_groups(signatures, threshold) == _python_near_duplicate_groups(signatures, threshold)
        expected = [any(j != i and (signatures[i] == signatures[j]).mean() >= threshold and any(
            (signatures[i, b * 4:(b + 1) * 4] == signatures[j, b * 4:(b + 1) * 4]).all() for b in range(16)) for j in range(100, 190))
            for i in range(100)]
        assert dedup.matches_any(signatures[:100], signatures[100:], threshold).tolist() == expected
    assert sum(g != i for i, g in enumerate(near_duplicate_groups(signatures, 0.8))) > 50  # the data does have near-duplicates


def test_clean_pool_reports_every_drop():
    cleaned, report = clean_pool(_pool(), _evaluation())
    assert report.exact_duplicates == 1 and report.near_duplicates == 1
    assert report.eval_overlap_exact == 1
    assert report.output_rows == 60 == len(cleaned)
    assert not {"dup-exact", "dup-near", "leak"} & set(cleaned["pair_id"])
    assert "p3" in set(cleaned["pair_id"])  # its positive is corpus text no evaluation query is judged on: not leakage


def test_leakage_is_an_evaluation_query_or_a_relevant_passage_exact_or_near():
    from retrofit_pipeline.mixing import evaluation_leakage

    pairs = pd.DataFrame({
        "query": ["what does the held-out query say", "What does the held out query sayy?", "something else entirely",
                  "an unrelated question"],
        "positive": ["x y z", "x y z", "an evaluation passage nobody trains on!", "passage 3 explains topic 21 in detail, with background, "
                     "history, examples and a short summary of related work"],
    })
    exact, near = evaluation_leakage(pairs, _evaluation(), near_duplicate_threshold=0.7)
    assert exact.tolist() == [True, False, True, False]
    assert near.tolist() == [False, True, False, False]  # a near-duplicate of the query; the shared corpus passage is fine


def test_held_out_domains_never_reach_the_pool():
    pool = _pool()
    pool.loc[pool.index[:10], "domain"] = "encyclopedia"
    cleaned, report = clean_pool(pool, _evaluation(), held_out_domains=["encyclopedia"])
    assert report.held_out_domain_rows == 10 and "encyclopedia" not in set(cleaned["domain"])


def test_task_diverse_balances_tasks_and_language_diverse_balances_languages():
    pool, _ = clean_pool(_pool(), _evaluation())
    task_mix = sample_mixture(pool, 30, "task_diverse", seed=3)
    assert task_mix.groupby("task_type").size().tolist() == [10, 10, 10]
    language_mix = sample_mixture(pool, 20, "language_diverse", seed=3)
    assert language_mix.groupby("language").size().tolist() == [5, 5, 5, 5]
    assert len(sample_mixture(pool, 25, "proportional", seed=3)) == 25


def test_smaller_scale_is_a_subset_of_larger_scale():
    pool, _ = clean_pool(_pool(), _evaluation())
    small = set(sample_mixture(pool, 12, "task_diverse", seed=5)["pair_id"])
    large = set(sample_mixture(pool, 36, "task_diverse", seed=5)["pair_id"])
    assert small < large


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="unknown mixture policy"):
        sample_mixture(_pool(), 5, "alphabetical", seed=1)


def test_a_held_out_task_never_reaches_the_pool_nor_its_query_in_another_task():
    import pandas as pd

    from retrofit_pipeline.mixing import clean_pool
    from retrofit_pipeline.schema import EvaluationSet

    pairs = pd.DataFrame({
        "pair_id": ["qa", "xl", "tr"], "query_id": ["q-en-how", "q-en-how", "q-en-ls"],
        "query": ["How do I list files?", "How do I list files?", "ls"],
        "positive": ["Use ls.", "Utilisez ls.", "ls lists directory contents"],
        "language": "en", "passage_language": ["en", "fr", "en"],
        "task_type": ["question_answering", "cross_lingual_retrieval", "title_retrieval"], "domain": "docs", "source": "s",
    })
    empty = EvaluationSet(pd.DataFrame({"doc_id": ["d"], "language": ["en"], "domain": ["x"], "text": ["unrelated text here"]}),
                          pd.DataFrame({"query_id": ["e"], "language": ["en"], "domain": ["x"], "text": ["an unrelated query"]}),
                          pd.DataFrame({"query_id": ["e"], "doc_id": ["d"], "score": [1]}))
    cleaned, report = clean_pool(pairs, empty, held_out_tasks=["question_answering"])
    assert cleaned["pair_id"].tolist() == ["tr"] and report.held_out_task_rows == 2
    assert clean_pool(pairs, empty)[0]["pair_id"].tolist() == ["qa", "xl", "tr"]
