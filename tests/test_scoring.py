"""One scoring path: models named by content, embeddings stored per model and settings, scored at
the model's own length with its own prompts."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from retrofit_pipeline.embedding_store import EmbeddingStore, model_identity
from retrofit_pipeline.scoring import check_comparable, load_for_scoring
from retrofit_pipeline.scoring_encoder import ScoringEncoder, evaluation_length


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from retrofit_pipeline.encoder import load_encoder

    directory = tmp_path_factory.mktemp("tiny") / "model"
    load_encoder(str(Path(os.environ["RETROFIT_CONFIG"]).parent / "tiny-encoder"), device="cpu",
                 query_prefix="query: ", passage_prefix="passage: ").save(str(directory))
    return directory


def test_identity_is_the_content_not_the_path(tiny, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    (copy / "README.md").write_text("a model card does not change what the model computes")
    assert model_identity(copy) == model_identity(tiny)
    weights = load_file(str(copy / "model.safetensors"))
    name = next(iter(weights))
    save_file({**weights, name: weights[name] + 1e-3}, str(copy / "model.safetensors"))
    assert model_identity(copy) != model_identity(tiny)


def test_the_store_keeps_every_key_across_processes(tmp_path):
    keys = [bytes([i]) * 15 + b"\x00" for i in range(1, 5)] + [b"\x00" * 16]  # keys ending in zero bytes survive saving
    vectors = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    store = EmbeddingStore(tmp_path, "m1", 128, "fp32")
    store.add(keys, vectors)
    store.save()
    reloaded = EmbeddingStore(tmp_path, "m1", 128, "fp32")
    found, rows = reloaded.lookup(keys[::-1])
    assert found.all() and np.array_equal(rows, vectors[::-1])
    assert not EmbeddingStore(tmp_path, "m1", 64, "fp32").lookup(keys)[0].any()  # another length: another store


def test_a_text_is_encoded_once_per_model_and_prompt(tiny, tmp_path):
    model = load_for_scoring(str(tiny), "cpu")
    encoder = ScoringEncoder(model, str(tiny), tmp_path, batch_size=4)
    texts = ["ls lists files", "cp copies files", "ls lists files"]
    first = encoder.embed(texts, "query: ")
    assert encoder.counts == {"served": 1, "encoded": 2}
    encoder.store.save()  # what score_encoder and faiss_index do when they finish
    again = ScoringEncoder(load_for_scoring(str(tiny), "cpu"), str(tiny), tmp_path, batch_size=4)
    np.testing.assert_array_equal(again.embed(texts, "query: "), first)
    assert again.counts == {"served": 3, "encoded": 0}
    assert not np.allclose(again.embed(texts[:1], "passage: "), first[:1])  # the prompt is part of the key
    # The same vectors a user gets from sentence-transformers with the model's own prompt.
    np.testing.assert_allclose(first, model.encode(texts, prompt_name="query", normalize_embeddings=True), atol=1e-5)


def test_models_are_scored_at_their_own_length_unless_a_budget_is_smaller(tiny):
    model = load_for_scoring(str(tiny), "cpu")
    assert evaluation_length(model, None) == model.max_seq_length == 128
    assert evaluation_length(model, 64) == 64 and evaluation_length(model, 4096) == 128
    assert load_for_scoring(str(tiny), "cpu").prompts == {"query": "query: ", "document": "passage: "}
    assert load_for_scoring(str(tiny), "cpu", prompts={"query": "", "document": ""}).prompts == {}


def test_scores_at_different_lengths_are_not_compared():
    check_comparable({"max_length": 512, "precision": "fp32"}, {"max_length": 512, "precision": "fp32"})
    with pytest.raises(ValueError, match="max_length=512 and the checkpoint with max_length=128"):
        check_comparable({"max_length": 512, "precision": "fp32"}, {"max_length": 128, "precision": "fp32"})


def test_an_index_must_belong_to_the_checkpoint_and_the_evaluation_set(tmp_path):
    import json

    from retrofit_pipeline.dagster_defs.assets.scores import index_problem

    assert "materialize faiss_index" in index_problem(tmp_path, "weights-a", "set-1")
    (tmp_path / "info.json").write_text(json.dumps({"model_identity": "weights-a", "evaluation_fingerprint": "set-1"}))
    assert index_problem(tmp_path, "weights-a", "set-1") is None
    assert "retrained?" in index_problem(tmp_path, "weights-b", "set-1")
    assert "evaluation set is now set-2" in index_problem(tmp_path, "weights-a", "set-2")
