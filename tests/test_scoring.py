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
from retrofit_pipeline.shared_layers import SharedLayerStates


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
    assert encoder.counts == {"served": 1, "encoded": 2, "from_shared_layers": 0}
    encoder.store.save()  # what score_encoder and faiss_index do when they finish
    again = ScoringEncoder(load_for_scoring(str(tiny), "cpu"), str(tiny), tmp_path, batch_size=4)
    np.testing.assert_array_equal(again.embed(texts, "query: "), first)
    assert again.counts == {"served": 3, "encoded": 0, "from_shared_layers": 0}
    assert not np.allclose(again.embed(texts[:1], "passage: "), first[:1])  # the prompt is part of the key
    # The same vectors a user gets from sentence-transformers with the model's own prompt.
    np.testing.assert_allclose(first, model.encode(texts, prompt_name="query", normalize_embeddings=True), atol=1e-5)


def _with_changed_layer(source: Path, destination: Path, layer: int) -> Path:
    """A copy of `source` whose transformer layer `layer` differs (what training that layer does)."""
    shutil.copytree(source, destination)
    weights = load_file(str(destination / "model.safetensors"))
    changed = {name: tensor + 0.05 if f"layer.{layer}." in name else tensor for name, tensor in weights.items()}
    assert changed.keys() == weights.keys() and any(f"layer.{layer}." in name for name in weights)
    save_file(changed, str(destination / "model.safetensors"))
    return destination


def test_a_checkpoint_that_shares_its_base_lower_layers_runs_only_its_own_and_gets_the_same_embeddings(tiny, tmp_path):
    # The base's scoring stores the states below the trained top layer; a checkpoint whose top
    # layer (only) moved starts there and must still get, bit for bit, its own full forward pass's
    # embeddings: batches of mixed lengths, so padding differs between rows.
    texts = [" ".join(["files"] * n) + f" copy {n}" for n in range(1, 40, 3)] + ["ls", "a longer sentence about man pages"]
    store = tmp_path / "store"
    base = ScoringEncoder(load_for_scoring(str(tiny), "cpu"), str(tiny), store, batch_size=4, trained_top_layers=1)
    base.embed(texts, "passage: ")
    assert base.shared_layers.split == 1 and base.counts["from_shared_layers"] == 0
    assert len(list(base.shared_layers.directory.glob("*.index.npz"))) == 1

    checkpoint_dir = _with_changed_layer(tiny, tmp_path / "checkpoint", layer=1)
    checkpoint = ScoringEncoder(load_for_scoring(str(checkpoint_dir), "cpu"), str(checkpoint_dir), store, batch_size=4,
                                trained_top_layers=1)
    assert checkpoint.shared_layers.directory == base.shared_layers.directory
    reused = checkpoint.embed(texts, "passage: ")
    assert checkpoint.counts["from_shared_layers"] == len(texts)
    full = ScoringEncoder(load_for_scoring(str(checkpoint_dir), "cpu"), str(checkpoint_dir), tmp_path / "alone", batch_size=4)
    expected = full.embed(texts, "passage: ")
    assert full.shared_layers is None
    np.testing.assert_array_equal(reused, expected)
    assert not np.allclose(reused, base.embed(texts, "passage: "))  # its own top layer did run

    # A checkpoint whose lower layer moved shares nothing: it encodes in full and stores its own states.
    moved_dir = _with_changed_layer(tiny, tmp_path / "moved", layer=0)
    moved = ScoringEncoder(load_for_scoring(str(moved_dir), "cpu"), str(moved_dir), store, batch_size=4, trained_top_layers=1)
    assert moved.shared_layers.directory != base.shared_layers.directory
    moved.embed(texts, "passage: ")
    assert moved.counts["from_shared_layers"] == 0

    # A text is keyed by its token ids: another prompt is another text, and a segment whose index
    # was never written (a crash between the two files) is not read.
    other = ScoringEncoder(load_for_scoring(str(checkpoint_dir), "cpu"), str(checkpoint_dir), store, batch_size=4,
                           trained_top_layers=1)
    other.embed(texts[:3], "query: ")
    assert other.counts == {"served": 0, "encoded": 3, "from_shared_layers": 0}
    assert len(SharedLayerStates(store / "shared-layers", checkpoint.model, 1, 128, "fp32")._where) == len(texts) + 3
    for index in base.shared_layers.directory.glob("*.index.npz"):
        index.unlink()
    assert not SharedLayerStates(store / "shared-layers", checkpoint.model, 1, 128, "fp32")._where


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


def test_stored_base_scores_are_refused_after_a_change_of_prompts():
    """Base scores made with one query prefix must not be compared with a checkpoint trained with another."""
    import pytest

    from retrofit_pipeline.scoring import check_comparable, check_prompts

    stored = {"max_length": 128, "precision": "fp32", "prompts": {"query": "query: ", "document": "passage: "}}
    check_prompts(stored, {"query": "query: ", "document": "passage: "}, "base_model_scores")  # the same prompts: reused
    with pytest.raises(ValueError, match="prompts"):
        check_prompts(stored, {"query": "search_query: ", "document": "passage: "}, "base_model_scores")
    with pytest.raises(ValueError, match="prompts"):
        check_comparable(stored, {**stored, "prompts": {"query": "", "document": "passage: "}})
    check_comparable(stored, {**stored, "prompts": {**stored["prompts"], "passage": "ignored: "}})  # a prompt scoring never applies
