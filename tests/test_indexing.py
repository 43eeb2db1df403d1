"""FAISS indexes: exact by default, approximate by factory string with a measured recall."""

import numpy as np
import pytest

from retrofit_pipeline.indexing import build_index, load_index, recall_against_exact, save_index


@pytest.fixture(scope="module")
def vectors():
    x = np.random.default_rng(0).normal(size=(2000, 32)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_is_exact_and_round_trips(vectors, tmp_path):
    index = build_index(vectors)
    _, ids = index.search(vectors[:5], 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    save_index(index, [f"d{i}" for i in range(2000)], ["de"] * 2000, tmp_path / "index", {"factory": "Flat"})
    loaded, doc_ids, languages = load_index(tmp_path / "index")
    assert loaded.ntotal == 2000 and doc_ids[7] == "d7" and set(languages) == {"de"}


@pytest.mark.parametrize("factory,minimum", [("HNSW32", 0.9), ("IVF16,Flat", 0.8)])
def test_approximate_indexes_report_recall(vectors, factory, minimum):
    index = build_index(vectors, factory, nprobe=8)
    recall = recall_against_exact(index, vectors, vectors[:200], k=10)
    assert minimum <= recall <= 1.0
