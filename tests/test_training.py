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
from retrofit_pipeline.losses import info_nce_loss
from retrofit_pipeline.trainer import train_encoder
from retrofit_pipeline.training import TrainingSettings
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
    # Masking a candidate removes exactly its term: query 0 then only weighs its positive against passages 2 and 3.
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = True
    scores = (q @ q.T / 0.05)
    unmasked = torch.nn.functional.cross_entropy(scores, torch.arange(4), reduction="none")
    row0 = -(scores[0, 0] - torch.logsumexp(scores[0, [0, 2, 3]], dim=0))
    expected = (row0 + unmasked[1:].sum()) / 4
    assert abs(float(info_nce_loss(q, q, 0.05, mask)) - float(expected)) < 1e-5


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
    from retrofit_pipeline.losses import false_negative_mask

    mask = false_negative_mask([["list files"], ["copy files"]], ["list files", "copy files", "list files", "remove"])
    assert mask.tolist() == [[False, False, True, False], [False, False, False, False]]


def test_other_positives_of_the_same_query_are_masked_in_the_batch():
    """MIRACL-style rows: one query, two positives. Neither row may punish the other's positive."""
    from retrofit_pipeline.losses import false_negative_mask
    from retrofit_pipeline.sampler import answers_by_row

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
    from retrofit_pipeline.sampler import query_batches

    query_ids = ["a", "a", "a", "b", "c", "d", "e", "f", "g", "h", "b", "c"]
    batches = query_batches(query_ids, 4, seed=1, epochs=2)
    # 12 rows, "a" three times: at most 3 batches an epoch, and a row whose query is already in the
    # batch waits for the next one; rows still waiting at the end go with the epoch's dropped partial batch.
    assert len(batches) == 5 and sum(len(b) for b in batches) == 20
    for batch in batches:
        assert len({query_ids[i] for i in batch}) == len(batch) == 4
    # Without duplicates it is the plain seeded permutation, cut into batches.
    plain = query_batches(list("abcdefgh"), 4, seed=3, epochs=1)
    assert [b.tolist() for b in plain] == [x.tolist() for x in np.split(np.random.default_rng(3).permutation(8), 2)]


def test_no_weight_decay_on_biases_and_layer_norms_and_frozen_embeddings_stay(base_model, tmp_path):
    from retrofit_pipeline.trainer import make_optimizer
    from retrofit_pipeline.weights import freeze_token_embeddings

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
    from retrofit_pipeline.losses import false_negative_mask
    from retrofit_pipeline.trainer import make_optimizer, training_step

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
    from retrofit_pipeline.trainer import embed_for_training

    model = load_encoder(base_model, device="cpu")
    model.eval()
    texts = [t * (1 + i % 4) for i, t in enumerate(training_pairs(20)["positive"])]
    with torch.no_grad():
        whole = embed_for_training(model, texts, 48, "cpu", "fp32")
        bucketed = embed_for_training(model, texts, 48, "cpu", "fp32", bucket_size=3)
    torch.testing.assert_close(whole, bucketed, rtol=1e-4, atol=1e-5)


def test_dropout_off_and_only_top_layers_train(base_model, tmp_path):
    from retrofit_pipeline.trainer import embed_for_training
    from retrofit_pipeline.weights import set_dropout

    model = load_encoder(base_model, device="cpu")
    model.train()
    set_dropout(model, 0.0)
    texts = training_pairs(6)["query"].tolist()
    torch.testing.assert_close(embed_for_training(model, texts, 32, "cpu", "fp32"), embed_for_training(model, texts, 32, "cpu", "fp32"))  # no dropout left

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
    from retrofit_pipeline.trainer import embed_for_training
    from retrofit_pipeline.weights import compile_layers

    model = load_encoder(base_model, device="cpu")
    model.eval()
    texts = [f"{q} {i}" for i, q in enumerate(training_pairs(10)["query"])]
    with torch.no_grad():
        eager = embed_for_training(model, texts, 32, "cpu", "fp32")
    assert compile_layers(model) == 2
    with torch.no_grad():
        compiled = embed_for_training(model, texts, 32, "cpu", "fp32")
    torch.testing.assert_close(eager, compiled, rtol=1e-4, atol=1e-5)
    model.train()
    embed_for_training(model, texts, 32, "cpu", "fp32").sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "encoder.layer" in n and p.requires_grad)


def _sentence_transformer_base(base_model: str, directory: Path) -> str:
    """The tiny encoder saved as a sentence-transformers model with E5-style prompts (like the default base)."""
    model = load_encoder(base_model, device="cpu", query_prefix="query: ", passage_prefix="passage: ")
    model.save(str(directory))
    return str(directory)


def test_a_checkpoint_loads_like_its_base_apart_from_the_weights(base_model, tmp_path):
    """Loaded with plain sentence-transformers, the checkpoint has its base's maximum length,
    tokenizer limit, prompts, pooling and dropout config: the training truncation (48) and dropout
    (0) are training settings only."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoConfig

    base_dir = _sentence_transformer_base(base_model, tmp_path / "base")
    data = training_pairs(64).assign(negatives=[[] for _ in range(64)])
    train_encoder(base_dir, data, _settings(epochs=1, dropout=0.0, max_passage_length=48, max_query_length=32), tmp_path / "out", tmp_path / "work")
    base, checkpoint = SentenceTransformer(base_dir, device="cpu"), SentenceTransformer(str(tmp_path / "out"), device="cpu")
    assert checkpoint.max_seq_length == base.max_seq_length == 128
    assert checkpoint.tokenizer.model_max_length == base.tokenizer.model_max_length
    assert checkpoint.prompts == base.prompts == {"query": "query: ", "document": "passage: "}
    assert checkpoint.default_prompt_name == base.default_prompt_name and checkpoint.similarity_fn_name == base.similarity_fn_name
    assert [type(m).__name__ for m in checkpoint] == [type(m).__name__ for m in base]
    assert checkpoint[1].get_config_dict() == base[1].get_config_dict()  # pooling
    base_config, saved_config = AutoConfig.from_pretrained(base_dir), AutoConfig.from_pretrained(tmp_path / "out")
    for field in ("hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "vocab_size"):
        assert getattr(saved_config, field) == getattr(base_config, field), field
    assert base_config.hidden_dropout_prob == 0.1  # so the equality above is not 0 == 0
    assert not torch.equal(load_file(tmp_path / "out" / "model.safetensors")["encoder.layer.1.output.dense.weight"],
                           load_file(Path(base_dir) / "model.safetensors")["encoder.layer.1.output.dense.weight"])


def test_translations_of_the_positive_are_correct_answers_in_the_batch():
    """Rows of one document (identity) in other languages: their passages are masked as negatives
    of each other's queries, as other positives of the same query are."""
    from retrofit_pipeline.mining import other_positives_by_row
    from retrofit_pipeline.losses import false_negative_mask
    from retrofit_pipeline.sampler import answers_by_row

    pool = pd.DataFrame({"query_id": ["q-de", "q-fr", "q-x"], "identity": ["man:ls.1", "man:ls.1", "man:cp.1"],
                         "positive": ["ls listet Dateien", "ls liste les fichiers", "cp kopiert"]})
    mixture = pool.assign(query=["was listet", "que liste", "was kopiert"])
    mixture["other_positives"] = other_positives_by_row(mixture, pool)
    assert mixture["other_positives"].tolist() == [["ls liste les fichiers"], ["ls listet Dateien"], []]
    mask = false_negative_mask(answers_by_row(mixture), mixture["positive"].tolist())
    assert mask.tolist() == [[False, True, False], [True, False, False], [False, False, False]]


def test_translation_positives_join_the_batch_as_positives_not_masked():
    from retrofit_pipeline.process_group import Distributed
    from retrofit_pipeline.sampler import answers_by_row, local_batch

    data = pd.DataFrame({"query_id": ["a", "b"], "query": ["qa", "qb"], "positive": ["pa-de", "pb-de"],
                         "other_positives": [["pa-fr"], []]})
    queries, passages, mask, labels, extra, *_ = local_batch(
        np.array([0, 1]), Distributed(), data["positive"].tolist(), [["n1"], ["n2"]], "", "", data["query"].tolist(), answers_by_row(data),
        translations=[["pa-fr"], []])
    assert passages == ["pa-de", "pb-de", "pa-fr", "n1", "n2"] and labels.tolist() == [0, 1]
    assert extra.tolist() == [[False, False, True, False, False], [False] * 5]
    assert not mask.any()  # the translation is a positive of row 0, not a masked candidate
    # The multi-positive loss: -log((e^s00 + e^s02) / sum over all candidates).
    q = torch.nn.functional.normalize(torch.randn(2, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    s = q @ p.T / 0.05
    expected = ((torch.logsumexp(s[0], 0) - torch.logsumexp(s[0, [0, 2]], 0)) + (torch.logsumexp(s[1], 0) - s[1, 1])) / 2
    assert abs(float(info_nce_loss(q, p, 0.05, mask, labels, extra)) - float(expected)) < 1e-5


def test_distillation_is_zero_at_the_teacher_and_pulls_towards_it():
    from retrofit_pipeline.losses import distillation_loss

    generator = torch.Generator().manual_seed(3)
    tq, tp = torch.randn(4, 8, generator=generator), torch.randn(6, 8, generator=generator)
    tq, tp = torch.nn.functional.normalize(tq, dim=-1), torch.nn.functional.normalize(tp, dim=-1)
    assert float(distillation_loss(tq, tp, tq, tp, 0.05)) < 1e-6
    student = torch.nn.functional.normalize(tq + 0.5 * torch.randn(4, 8, generator=generator), dim=-1).requires_grad_()
    loss = distillation_loss(student, tp, tq, tp, 0.05)
    loss.backward()
    with torch.no_grad():
        stepped = torch.nn.functional.normalize(student - 0.01 * student.grad, dim=-1)
    assert float(loss) > 0 and float(distillation_loss(stepped, tp, tq, tp, 0.05)) < float(loss)


def test_batches_by_language_hold_one_language_while_it_fills_one():
    from retrofit_pipeline.sampler import query_batches

    languages = ["de"] * 9 + ["fr"] * 8 + ["ja"] * 3
    query_ids = [f"q{i}" for i in range(len(languages))]
    batches = query_batches(query_ids, 4, seed=5, epochs=1, groups=languages)
    kinds = sorted("".join(sorted({languages[i] for i in batch})) for batch in batches)
    # de: 2 full batches (1 left over), fr: 2, ja: none; the 4 leftovers make one mixed batch.
    assert kinds == ["de", "de", "deja", "fr", "fr"]
    assert sorted(i for batch in batches for i in batch) == list(range(20))  # every row placed once


def test_lora_trains_adapters_and_saves_a_plain_model(base_model, tmp_path):
    data = training_pairs(64).assign(negatives=[[] for _ in range(64)])
    train_encoder(base_model, data, _settings(epochs=1, lora={"r": 4, "alpha": 8}), tmp_path / "lora", tmp_path / "work")
    saved, before = load_file(tmp_path / "lora" / "model.safetensors"), load_file(Path(base_model) / "model.safetensors")
    saved = {k.removeprefix("0.auto_model."): v for k, v in saved.items()}
    assert set(saved) == set(before)  # merged: no adapter tensors left, the base's names
    changed = [name for name, tensor in before.items() if not torch.equal(tensor, saved[name])]
    assert changed and all(any(part in name for part in ("query", "key", "value", "dense")) for name in changed)
    assert not any("embeddings" in name for name in changed)


def test_merging_with_the_base_interpolates_and_the_alpha_rule_prefers_no_forgetting(tmp_path, base_model):
    from retrofit_pipeline.merging import choose_alpha, write_merged

    data = training_pairs(64).assign(negatives=[[] for _ in range(64)])
    train_encoder(base_model, data, _settings(epochs=1), tmp_path / "trained", tmp_path / "work")
    trained, base = load_file(tmp_path / "trained" / "model.safetensors"), load_file(Path(base_model) / "model.safetensors")
    half = load_file(write_merged(tmp_path / "trained", Path(base_model), 0.5, tmp_path / "half") / "model.safetensors")
    name = "encoder.layer.0.output.dense.weight"
    torch.testing.assert_close(half[name], (trained[name] + base[name]) / 2)
    assert (tmp_path / "half" / "modules.json").exists()

    def entry(alpha, in_domain, pooled):
        return {"alpha": alpha, "means": {"in-domain": {"gain": in_domain}, "pooled": {"gain": pooled}}}

    alpha, reason = choose_alpha([entry(0.0, 0.05, -0.02), entry(0.25, 0.04, 0.001), entry(0.5, 0.02, 0.01)])
    assert alpha == 0.25 and "no dev scope below the base" in reason
    alpha, reason = choose_alpha([entry(0.0, 0.05, -0.04), entry(0.5, 0.02, -0.01)])
    assert alpha == 0.5 and "least below" in reason


def test_lora_keeps_its_own_dropout_when_training_dropout_is_set(base_model, tmp_path, monkeypatch):
    """training.dropout is the encoder's; set after the adapters existed it overwrote LoRA's own
    (training.lora.dropout) too."""
    import retrofit_pipeline.trainer as training

    seen = []
    real_step = training.training_step

    def recording_step(model, *args, **kwargs):
        seen.append({name: module.p for name, module in model.named_modules() if isinstance(module, torch.nn.Dropout)})
        return real_step(model, *args, **kwargs)

    monkeypatch.setattr(training, "training_step", recording_step)
    data = training_pairs(32).assign(negatives=[[] for _ in range(32)])
    train_encoder(base_model, data, _settings(epochs=1, max_steps=1, dropout=0.0, lora={"r": 4, "alpha": 8, "dropout": 0.1}),
                  tmp_path / "lora", tmp_path / "work")
    (rates,) = seen
    adapters = {name: p for name, p in rates.items() if "lora_dropout" in name}
    assert adapters and set(adapters.values()) == {0.1}
    assert {p for name, p in rates.items() if name not in adapters} == {0.0}  # the encoder's own: training.dropout


def test_pairs_fingerprint_names_the_pairs_whatever_the_order_and_the_other_columns():
    from retrofit_pipeline.mining import attach_negatives
    from retrofit_pipeline.training import pairs_fingerprint

    mixture = training_pairs(12)
    fingerprint = pairs_fingerprint(mixture)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    # The negatives frame mined from the mixture (more columns), read back in another row order: the same pairs.
    negatives = attach_negatives(mixture, [["n"]] * 12, [[0]] * 12).sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert pairs_fingerprint(negatives) == fingerprint
    assert pairs_fingerprint(mixture.drop(columns=["language", "task_type"])) == fingerprint
    for column in ("pair_id", "query", "positive"):
        changed = mixture.copy()
        changed.loc[5, column] = changed.loc[5, column] + " (changed)"
        assert pairs_fingerprint(changed) != fingerprint, column
    assert pairs_fingerprint(mixture.iloc[1:]) != fingerprint
    # Field boundaries count: ("a b", "c") and ("a", "b c") are other pairs.
    one = pd.DataFrame({"pair_id": ["p"], "query": ["a b"], "positive": ["c"]})
    assert pairs_fingerprint(one) != pairs_fingerprint(one.assign(query="a", positive="b c"))


def test_the_checkpoint_records_the_fingerprint_of_its_training_pairs(base_model, tmp_path):
    import json

    from retrofit_pipeline.config import load_config
    from retrofit_pipeline.distributed_training import checkpoint_metadata
    from retrofit_pipeline.training import pairs_fingerprint

    data = training_pairs(32).assign(negatives=[[] for _ in range(32)])
    result = train_encoder(base_model, data, _settings(epochs=1, max_steps=1), tmp_path / "out", tmp_path / "work")
    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert log["training_pairs_fingerprint"] == result.training_pairs_fingerprint == pairs_fingerprint(data)
    # The encoder_checkpoint asset's metadata (local launcher and torchrun through Pipes alike).
    metadata = checkpoint_metadata(load_config(os.environ["RETROFIT_CONFIG"]), data, result, str(tmp_path / "out"))
    assert metadata["training_pairs_fingerprint"] == pairs_fingerprint(data)
