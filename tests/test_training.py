"""Contrastive training on a small separable set: the loss falls, nDCG rises, and a run
interrupted mid-way resumes to the same weights as an uninterrupted one."""

import os
from pathlib import Path

import numpy as np
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
    from retrofit_pipeline.training import _duplicate_positive_mask

    mask = _duplicate_positive_mask(["list files", "copy files"], ["list files", "copy files", "list files", "remove"])
    assert mask.tolist() == [[False, False, True, False], [False, False, False, False]]
