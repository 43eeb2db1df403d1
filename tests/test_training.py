"""Contrastive training on a small separable set: the loss falls, nDCG rises, and a run
interrupted mid-way resumes to the same weights as an uninterrupted one."""

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from retrofit_pipeline.encoder import encode_texts, load_encoder
from retrofit_pipeline.evaluation import ndcg_from_rankings
from retrofit_pipeline.training import TrainingSettings, info_nce_loss, train_encoder
from synthetic import evaluation_frames, training_pairs



@pytest.fixture(scope="module")
def base_model():
    return str(Path(os.environ["RETROFIT_CONFIG"]).parent / "tiny-encoder")


def _settings(**overrides):
    values = dict(epochs=3, batch_size=16, learning_rate=1e-3, max_query_length=32, max_passage_length=48,
                  save_every_steps=5, warmup_ratio=0.0, seed=7, device="cpu")
    values.update(overrides)
    return TrainingSettings(**values)


def _ndcg(model_path, prefix_q="query: ", prefix_p="passage: "):
    corpus, queries, qrels = evaluation_frames()
    model = load_encoder(str(model_path), device="cpu")
    docs = encode_texts(model, corpus["text"].tolist(), prefix_p)
    qs = encode_texts(model, queries["query"].tolist(), prefix_q)
    top = np.argsort(-(qs @ docs.T), axis=1)[:, :10]
    rankings = {qid: {corpus["docid"].iloc[j]: float(10 - r) for r, j in enumerate(row)} for qid, row in zip(queries["query_id"], top)}
    return ndcg_from_rankings(rankings, qrels.rename(columns={"docid": "doc_id", "relevance": "score"}))


def test_info_nce_prefers_the_aligned_pairing():
    q = torch.nn.functional.normalize(torch.eye(4), dim=-1)
    assert info_nce_loss(q, q, 0.05) < info_nce_loss(q, q.roll(1, 0), 0.05)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = True
    assert torch.isfinite(info_nce_loss(q, q.roll(1, 0), 0.05, mask))


def test_training_lowers_loss_and_raises_ndcg(base_model, tmp_path):
    data = training_pairs().assign(negatives=[[] for _ in range(240)])
    result = train_encoder(base_model, data, _settings(), tmp_path / "out", tmp_path / "work")
    summary = result.summary()
    assert summary["last_loss"] < 0.7 * summary["first_loss"]
    before, after = _ndcg(base_model), _ndcg(tmp_path / "out")
    assert after > before + 0.05, (before, after)
    for name in ("model.safetensors", "modules.json", "config_sentence_transformers.json", "training_log.json"):
        assert (tmp_path / "out" / name).exists(), name
    assert not list((tmp_path / "out").glob("*.bin")) and not (tmp_path / "work" / "resume").exists()


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(base_model, tmp_path):
    data = training_pairs(96).assign(negatives=lambda f: [[p] for p in f["positive"].iloc[::-1]])
    settings = _settings(epochs=2, save_every_steps=3)
    train_encoder(base_model, data, settings, tmp_path / "full", tmp_path / "work-full")

    def crash_at_step_8(step, total, loss):
        if step == 8:
            raise Interrupt()

    with pytest.raises(Interrupt):
        train_encoder(base_model, data, settings, tmp_path / "resumed", tmp_path / "work-resumed", on_progress=crash_at_step_8)
    assert not (tmp_path / "resumed").exists()  # nothing half-written at the final path
    result = train_encoder(base_model, data, settings, tmp_path / "resumed", tmp_path / "work-resumed")
    assert result.resumed_from_step == 6
    full = load_file(tmp_path / "full" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    for name in full:
        torch.testing.assert_close(full[name], resumed[name], rtol=1e-4, atol=1e-5)


def test_same_text_as_the_positive_is_masked_not_punished():
    from retrofit_pipeline.training import false_negative_mask

    mask = false_negative_mask([["list files"], ["copy files"]], ["list files", "copy files", "list files", "remove"])
    assert mask.tolist() == [[False, False, True, False], [False, False, False, False]]


def test_other_positives_of_the_same_query_are_masked_in_the_batch():
    """MIRACL-style rows: one query, two positives. Neither row may punish the other's positive."""
    from retrofit_pipeline.training import answers_by_row, false_negative_mask

    data = pd.DataFrame({"query_id": ["q1", "q1", "q2"], "query": ["wer schrieb faust"] * 2 + ["hauptstadt"],
                         "positive": ["Goethe schrieb Faust.", "Faust ist von Goethe.", "Berlin ist die Hauptstadt."],
                         "other_positives": [["Faust I und II: Goethe."], [], []]})
    answers = answers_by_row(data)
    assert answers[0] == answers[1] == {"Goethe schrieb Faust.", "Faust ist von Goethe.", "Faust I und II: Goethe."}
    passages = data["positive"].tolist() + ["Faust I und II: Goethe.", "Rom ist die Hauptstadt Italiens."]
    mask = false_negative_mask(answers, passages)
    assert mask.tolist() == [
        [False, True, False, True, False],
        [True, False, False, True, False],
        [False, False, False, False, False],
    ]


def test_masked_loss_equals_a_hand_computation():
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    p = torch.nn.functional.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]), dim=-1)
    mask = torch.tensor([[False, False, True], [False, False, False]])
    t = 0.05
    s = (q @ p.T / t).tolist()
    # Query 0: positive 0, candidates 0 and 1 (2 is masked). Query 1: positive 1, candidates 0, 1, 2.
    expected = (-(s[0][0] - math.log(math.exp(s[0][0]) + math.exp(s[0][1])))
                - (s[1][1] - math.log(math.exp(s[1][0]) + math.exp(s[1][1]) + math.exp(s[1][2])))) / 2
    assert abs(float(info_nce_loss(q, p, t, mask)) - expected) < 1e-5


def test_batches_hold_each_query_once():
    from retrofit_pipeline.training import _batches

    query_ids = ["a", "a", "a", "b", "c", "d", "e", "f", "g", "h", "b", "c"]
    batches = _batches(query_ids, 4, seed=1, epochs=2)
    assert len(batches) >= 4  # rows that cannot be placed in an epoch's last batch wait, as a partial batch is dropped
    for batch in batches:
        assert len({query_ids[i] for i in batch}) == len(batch) == 4
    # Without duplicates it is the plain seeded permutation, cut into batches.
    plain = _batches(list("abcdefgh"), 4, seed=3, epochs=1)
    assert [b.tolist() for b in plain] == [x.tolist() for x in np.split(np.random.default_rng(3).permutation(8), 2)]


def test_no_weight_decay_on_biases_and_layer_norms_and_frozen_embeddings_stay(base_model, tmp_path):
    from retrofit_pipeline.training import freeze_token_embeddings, make_optimizer

    model = load_encoder(base_model, device="cpu")
    frozen = freeze_token_embeddings(model)
    optimizer = make_optimizer(model, _settings(weight_decay=0.1))
    decay, no_decay = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert any("LayerNorm" in names[id(p)] for p in no_decay["params"]) and any(names[id(p)].endswith("bias") for p in no_decay["params"])
    assert frozen > 0 and all("word_embeddings" not in names[id(p)] for g in optimizer.param_groups for p in g["params"])

    data = training_pairs(64).assign(negatives=[[] for _ in range(64)])
    train_encoder(base_model, data, _settings(epochs=1, freeze_embeddings=True), tmp_path / "frozen", tmp_path / "work")
    before, after = load_file(Path(base_model) / "model.safetensors"), load_file(tmp_path / "frozen" / "model.safetensors")
    key = next(k for k in after if k.endswith("word_embeddings.weight"))
    base_key = next(k for k in before if k.endswith("word_embeddings.weight"))
    assert torch.equal(before[base_key], after[key])
    assert any(not torch.equal(before[k], after["0.auto_model." + k] if "0.auto_model." + k in after else after.get(k, before[k]))
               for k in before if "encoder.layer.0" in k)


def test_interpolation_with_the_base_lands_between_base_and_trained(base_model, tmp_path):
    data = training_pairs(64).assign(negatives=[[] for _ in range(64)])
    train_encoder(base_model, data, _settings(epochs=1), tmp_path / "trained", tmp_path / "w1")
    train_encoder(base_model, data, _settings(epochs=1, interpolate_with_base=0.25), tmp_path / "mixed", tmp_path / "w2")
    base = load_file(Path(base_model) / "model.safetensors")
    trained, mixed = load_file(tmp_path / "trained" / "model.safetensors"), load_file(tmp_path / "mixed" / "model.safetensors")
    key = next(k for k in trained if "encoder.layer.0.attention.self.query.weight" in k)
    base_tensor = base[next(k for k in base if k.endswith("encoder.layer.0.attention.self.query.weight"))]
    torch.testing.assert_close(mixed[key], 0.75 * trained[key] + 0.25 * base_tensor, rtol=1e-4, atol=1e-6)


def test_fp16_gradient_scaler_gives_the_unscaled_update(base_model):
    """The scaler multiplies the loss before backward and divides the gradients before clipping and
    the step: the update must equal the one without scaling (checked with the CPU scaler)."""
    from retrofit_pipeline.training import false_negative_mask, make_optimizer, training_step

    data = training_pairs(8)
    queries, passages = ["query: " + q for q in data["query"]], ["passage: " + p for p in data["positive"]]
    mask, labels = false_negative_mask([[p] for p in passages], passages), torch.arange(8)
    settings = _settings(mini_batch_size=3)
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=1024.0)):
        torch.manual_seed(0)
        model = load_encoder(base_model, device="cpu")
        model.eval()  # no dropout: both runs see the same forward
        optimizer = make_optimizer(model, settings)
        training_step(model, optimizer, queries, passages, mask, labels, settings, "cpu", scaler=scaler)
        results.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-4, atol=1e-6)


def test_resume_under_another_world_size_warns_and_continues(base_model, tmp_path):
    data = training_pairs(96).assign(negatives=[[] for _ in range(96)])
    settings = _settings(epochs=1, save_every_steps=2)

    def crash_at_step_3(step, total, loss):
        if step == 3:
            raise Interrupt()

    with pytest.raises(Interrupt):
        train_encoder(base_model, data, settings, tmp_path / "out", tmp_path / "work", on_progress=crash_at_step_3)
    state_file = tmp_path / "work" / "resume" / "trainer_state.pt"
    state = torch.load(state_file, weights_only=True)
    state["rng"] = state["rng"] * 2  # as if saved by two processes
    torch.save(state, state_file)
    result = train_encoder(base_model, data, settings, tmp_path / "out", tmp_path / "work")
    assert result.resumed_from_step == 2
    assert any("under 1 process(es), saved under 2" in w for w in result.warnings)


def test_length_buckets_give_the_embeddings_of_one_padded_batch(base_model):
    from retrofit_pipeline.training import _embed

    model = load_encoder(base_model, device="cpu")
    model.eval()
    texts = [t * (1 + i % 4) for i, t in enumerate(training_pairs(20)["positive"])]
    with torch.no_grad():
        whole = _embed(model, texts, 48, "cpu", "fp32")
        bucketed = _embed(model, texts, 48, "cpu", "fp32", bucket_size=3)
    torch.testing.assert_close(whole, bucketed, rtol=1e-4, atol=1e-5)


def test_dropout_off_and_only_top_layers_train(base_model, tmp_path):
    from retrofit_pipeline.training import _embed, set_dropout

    model = load_encoder(base_model, device="cpu")
    model.train()
    set_dropout(model, 0.0)
    texts = training_pairs(6)["query"].tolist()
    torch.testing.assert_close(_embed(model, texts, 32, "cpu", "fp32"), _embed(model, texts, 32, "cpu", "fp32"))  # no dropout left

    data = training_pairs(64).assign(negatives=[[] for _ in range(64)])
    train_encoder(base_model, data, _settings(epochs=1, dropout=0.0, trainable_top_layers=1), tmp_path / "top", tmp_path / "work")
    before, after = load_file(Path(base_model) / "model.safetensors"), load_file(tmp_path / "top" / "model.safetensors")
    after = {k.removeprefix("0.auto_model."): v for k, v in after.items()}
    # The tiny encoder has 2 layers: the top one (layer 1) trains, embeddings and layer 0 stay as they were.
    for name, tensor in before.items():
        if "encoder.layer.1." not in name:
            assert torch.equal(tensor, after[name]), name
    assert any(not torch.equal(t, after[n]) for n, t in before.items() if "encoder.layer.1." in n)


def test_regionally_compiled_layers_compute_the_same_embeddings_and_train(base_model):
    from retrofit_pipeline.training import _embed, compile_layers

    model = load_encoder(base_model, device="cpu")
    model.eval()
    texts = [f"{q} {i}" for i, q in enumerate(training_pairs(10)["query"])]
    with torch.no_grad():
        eager = _embed(model, texts, 32, "cpu", "fp32")
    assert compile_layers(model) == 2
    with torch.no_grad():
        compiled = _embed(model, texts, 32, "cpu", "fp32")
    torch.testing.assert_close(eager, compiled, rtol=1e-4, atol=1e-5)
    model.train()
    _embed(model, texts, 32, "cpu", "fp32").sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "encoder.layer" in n and p.requires_grad)
