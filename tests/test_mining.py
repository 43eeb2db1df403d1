"""Hard-negative mining: rank window, false-negative filter, k per query, and the ablation strategies."""

import numpy as np
import pytest

from retrofit_pipeline.mining import MiningSettings, mine_negatives


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# 2-d embeddings with known geometry: the query sits at angle 0, pool passages at growing angles.
ANGLES = {"positive": 0.10, "near-copy": 0.11, "close": 0.5, "mid": 0.9, "far": 1.4, "opposite": 3.0}
VECTORS = {text: _unit([[np.cos(a), np.sin(a)]])[0] for text, a in ANGLES.items()}
VECTORS["the query"] = _unit([[1.0, 0.0]])[0]


def encode(texts, out=None):
    result = np.stack([VECTORS[t] for t in texts])
    if out is not None:
        out[:] = result
        return out
    return result


def _mine(tmp_path, **settings):
    queries = ["the query"] + ["the query"] * 5
    positives = ["positive", "near-copy", "close", "mid", "far", "opposite"]
    return mine_negatives(queries, positives, MiningSettings(**settings), encode_queries=encode, encode_pool=encode, work_dir=tmp_path)


def test_dense_window_and_false_negative_filter(tmp_path):
    negatives, ranks, report = _mine(tmp_path, strategy="dense", num_negatives=2, range_min=0, range_max=5, relative_margin=0.05)
    # "near-copy" scores 0.99995 x the positive: a likely false negative, filtered.
    assert negatives[0] == ["close", "mid"]
    assert ranks[0] == [1, 2]
    assert report.filtered_as_false_negative >= 1 and 0 < report.false_negative_share < 1
    assert all(len(n) == 2 for n in negatives)
    assert all(positive not in n for positive, n in zip(["positive", "near-copy", "close", "mid", "far", "opposite"], negatives))
    assert (tmp_path / "pool_embeddings.npy").exists()  # the pool is streamed to a memory-mapped file


def test_rank_window_skips_the_top(tmp_path):
    negatives, ranks, _ = _mine(tmp_path, strategy="dense", num_negatives=1, range_min=2, range_max=5, relative_margin=0.0)
    assert negatives[0] == ["mid"] and ranks[0] == [2]


def test_random_bm25_and_none(tmp_path):
    random_negatives, _, report = _mine(tmp_path, strategy="random", num_negatives=2)
    assert all(len(n) == 2 for n in random_negatives) and report.strategy == "random"
    none, _, report = _mine(tmp_path, strategy="none")
    assert none == [[]] * 6 and report.negatives_per_query == 0

    queries = ["copy files between directories", "list directory contents", "remove a file"]
    positives = ["cp copies files from one directory to another", "ls lists the contents of a directory", "rm removes files"]
    bm25, ranks, report = mine_negatives(queries, positives, MiningSettings(strategy="bm25", num_negatives=1, range_max=5, relative_margin=0.0))
    assert bm25[0] != [positives[0]] and len(bm25[0]) == 1 and ranks[0][0] >= 0


def test_invalid_window_is_rejected():
    with pytest.raises(ValueError, match="rank window"):
        MiningSettings(range_min=10, range_max=5).validate()


def test_blocked_search_equals_exact_flat_search():
    from retrofit_pipeline.indexing import build_flat_index
    from retrofit_pipeline.mining import _exact_search_blocked

    rng = np.random.default_rng(0)
    pool = _unit(rng.normal(size=(1000, 16)))
    queries = _unit(rng.normal(size=(37, 16)))
    expected_scores, expected_ids = build_flat_index(pool).search(queries, 25)
    scores, ids = _exact_search_blocked(pool, queries, 25, block_rows=128)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    assert (ids == expected_ids).mean() > 0.99  # ties may swap places


def test_extra_corpus_joins_the_pool(tmp_path):
    queries, positives = ["the query"] * 2, ["positive", "far"]
    negatives, _, report = mine_negatives(queries, positives, MiningSettings(num_negatives=1, range_max=5, relative_margin=0.05),
                                          encode_queries=encode, encode_pool=encode, corpus=["close", "mid", "positive"])
    assert report.pool_size == 4  # distinct positives + corpus, deduplicated
    assert negatives[0] == ["close"]
    # Every candidate scores above the weak positive "far" (minus 5 %): filtered, then padded at random.
    assert report.queries_padded_with_random == 1 and negatives[1][0] != "far"


def test_other_positives_of_the_same_query_are_never_negatives_nor_ranks(tmp_path):
    # MIRACL-style: one query, two rows (one per positive). Each row's other positive is a correct
    # answer: excluded, and the ranks count only the remaining candidates.
    queries = ["the query", "the query"]
    positives = ["positive", "close"]
    negatives, ranks, report = mine_negatives(
        queries, positives, MiningSettings(num_negatives=1, range_min=0, range_max=5, relative_margin=0.0),
        encode_queries=encode, encode_pool=encode, corpus=["near-copy", "mid", "far"],
        other_positives=[["close"], ["positive"]])
    # Row 2's positive "close" scores below "near-copy", which is therefore filtered as a likely false negative.
    assert negatives == [["near-copy"], ["mid"]] and ranks == [[0], [1]]
    assert report.excluded_same_query_positives == 2 and report.queries_with_mined_negative == 2
    assert report.filtered_as_false_negative == 1
    assert all("close" not in n and "positive" not in n for n in negatives)


def _scored_encoder(query_vector, passage_vectors):
    def encode_queries(texts):
        return np.stack([query_vector for _ in texts]).astype(np.float32)

    def encode_pool(texts, out=None):
        result = np.stack([passage_vectors[t] for t in texts]).astype(np.float32)
        if out is not None:
            out[:] = result
            return out
        return result

    return encode_queries, encode_pool


@pytest.mark.parametrize("positive_score", [0.5, -0.5])
def test_false_negative_filter_holds_for_both_signs_of_the_positive_score(positive_score):
    # Raw inner products (as BM25 or an unnormalized model gives): candidates just above the
    # positive are the likeliest false negatives, whatever the sign; those well below are kept.
    scores = {"positive": positive_score, "above": positive_score + 0.2, "just-below": positive_score - 0.01,
              "well-below": positive_score - 0.5}
    encode_queries, encode_pool = _scored_encoder(np.array([1.0]), {t: np.array([v]) for t, v in scores.items()})
    negatives, _, report = mine_negatives(
        ["q"], ["positive"], MiningSettings(num_negatives=1, range_min=0, range_max=5, relative_margin=0.1),
        encode_queries=encode_queries, encode_pool=encode_pool, corpus=["above", "just-below", "well-below"])
    assert negatives == [["well-below"]], negatives
    assert report.filtered_as_false_negative == 2


def test_absolute_margin_and_max_score():
    scores = {"positive": 0.8, "a": 0.79, "b": 0.74, "c": 0.6}
    encode_queries, encode_pool = _scored_encoder(np.array([1.0]), {t: np.array([v]) for t, v in scores.items()})
    mine = lambda **kw: mine_negatives(["q"], ["positive"], MiningSettings(num_negatives=1, range_max=5, relative_margin=None, **kw),
                                       encode_queries=encode_queries, encode_pool=encode_pool, corpus=["a", "b", "c"])[0]
    assert mine(absolute_margin=0.05) == [["b"]]
    assert mine(max_score=0.7) == [["c"]]
    assert mine() == [["a"]]  # no rule: the hardest candidate


def test_rank_window_is_half_open(tmp_path):
    # Ranks (positive removed): close 0, mid 1, far 2, opposite 3. Window [1, 3) allows mid and far, never opposite.
    negatives, ranks, _ = mine_negatives(
        ["the query"], ["positive"], MiningSettings(num_negatives=3, range_min=1, range_max=3, relative_margin=0.0),
        encode_queries=encode, encode_pool=encode, corpus=["close", "mid", "far", "opposite"])
    assert ranks[0][:2] == [1, 2] and negatives[0][:2] == ["mid", "far"]
    assert ranks[0][2] == -1 and negatives[0][2] in {"close", "opposite"}  # the window ran short: padded at random, marked -1


def test_random_pair_baseline_calibrates_the_margin_to_a_compressed_score_scale():
    # E5-like scores: unrelated passages ~0.80, the positive 0.87, a near-copy 0.869, a hard negative 0.85.
    scores = {"positive": 0.87, "near-copy": 0.869, "hard": 0.85, **{f"unrelated{i}": 0.80 for i in range(20)}}
    encode_queries, encode_pool = _scored_encoder(np.array([1.0]), {t: np.array([v]) for t, v in scores.items()})
    corpus = [t for t in scores if t != "positive"]

    def mine(baseline):
        settings = MiningSettings(num_negatives=1, range_min=0, range_max=5, relative_margin=0.05, margin_baseline=baseline)
        return mine_negatives(["q"], ["positive"], settings, encode_queries=encode_queries, encode_pool=encode_pool, corpus=corpus)

    negatives, ranks, report = mine("random_pairs")
    assert negatives == [["hard"]] and ranks == [[1]]  # the near-copy is filtered, the hard negative kept
    assert report.extra["margin_baseline"] == pytest.approx(0.80, abs=0.011)
    negatives, ranks, _ = mine("zero")  # 0.95 x 0.87 = 0.8265: every close candidate looks like a false negative
    assert ranks == [[2]] and negatives[0][0].startswith("unrelated")


def test_translations_of_the_positive_are_never_negatives(tmp_path):
    """"close" is the French version of the positive's document (same identity): without the
    identity it is the top candidate of the window; with it, it is excluded like a same-query positive."""
    import pandas as pd

    from retrofit_pipeline.mining import other_positives_by_row, positive_translations, same_document_counts

    raw = pd.DataFrame({"query_id": ["q1", "q2", "q3"], "identity": ["man:ls.1", "man:ls.1", "man:cp.1"],
                        "passage_identity": ["man:ls.1#NAME", "man:ls.1#NAME", "man:cp.1#NAME"],
                        "positive": ["positive", "close", "far"], "task_type": "summary_retrieval", "passage_language": ["de", "fr", "de"]})
    mixture = raw.iloc[[0]].assign(query="the query")
    settings = MiningSettings(strategy="dense", num_negatives=2, range_min=0, range_max=5, relative_margin=0.05)
    corpus = ["near-copy", "close", "mid", "far", "opposite"]
    plain, _, _ = mine_negatives(["the query"], ["positive"], settings, encode_queries=encode, encode_pool=encode, corpus=corpus)
    assert "close" in plain[0]
    others = other_positives_by_row(mixture, raw)
    assert others == [["close"]]
    mined, ranks, report = mine_negatives(["the query"], ["positive"], settings, encode_queries=encode, encode_pool=encode,
                                          corpus=corpus, other_positives=others)
    assert "close" not in mined[0] and mined[0] == ["mid", "far"] and report.excluded_same_query_positives == 1
    assert same_document_counts(mixture, raw, plain) == {"rows_with_same_document_passages": 1, "same_document_passages": 1,
                                                         "rows_with_same_document_negative": 1}
    assert same_document_counts(mixture, raw, mined)["rows_with_same_document_negative"] == 0
    assert positive_translations(mixture, raw) == [["close"]]


def test_each_passage_gets_its_own_translation_not_its_documents_first():
    """Cloze rows of paragraphs 1, 2, 3 of one document in de and fr: all share the document's
    identity, so matching by it gave every German row paragraph 1's French text. Matched by
    passage_identity, each row gets its own paragraph's translation; a row whose passage is not
    known to be aligned (None, or NaN after a concat with synthetic rows) gets none."""
    import pandas as pd

    from retrofit_pipeline.mining import positive_translations

    rows = [{"query_id": f"q-{language}-{n}", "identity": "documents:guide.md", "passage_identity": f"documents:guide.md#{n}",
             "positive": f"{language} paragraph {n}", "task_type": "inverse_cloze", "passage_language": language}
            for language in ("fr", "de") for n in (1, 2, 3)]
    rows.append({"query_id": "q-de-4", "identity": "documents:guide.md", "passage_identity": None, "positive": "de paragraph 4",
                 "task_type": "inverse_cloze", "passage_language": "de"})
    rows.append({"query_id": "q-fr-4", "identity": "documents:guide.md", "passage_identity": float("nan"), "positive": "fr paragraph 4",
                 "task_type": "inverse_cloze", "passage_language": "fr"})
    # Same passage in another task form: not the cloze positive's translation.
    rows.append({"query_id": "q-fr-title-2", "identity": "documents:guide.md", "passage_identity": "documents:guide.md#2",
                 "positive": "fr paragraph 2, whole", "task_type": "title_retrieval", "passage_language": "fr"})
    pool = pd.DataFrame(rows)
    translations = positive_translations(pool, pool)
    by_row = dict(zip(pool["query_id"], translations))
    assert [by_row[f"q-de-{n}"] for n in (1, 2, 3)] == [["fr paragraph 1"], ["fr paragraph 2"], ["fr paragraph 3"]]
    assert [by_row[f"q-fr-{n}"] for n in (1, 2, 3)] == [["de paragraph 1"], ["de paragraph 2"], ["de paragraph 3"]]
    assert by_row["q-de-4"] == [] and by_row["q-fr-4"] == [] and by_row["q-fr-title-2"] == []
    # A mixture sampled from the pool looks its rows' translations up in the whole pool.
    mixture = pool[pool["query_id"].isin(["q-de-3", "q-fr-2"])]
    assert positive_translations(mixture, pool) == [["de paragraph 2"], ["fr paragraph 3"]]
    # Without the column (no source aligns passages) nothing is attached, whatever the identities say.
    assert positive_translations(pool.drop(columns="passage_identity"), pool.drop(columns="passage_identity")) == [[]] * len(pool)
