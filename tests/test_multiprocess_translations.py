"""Several processes with rows of unequal translation counts (translation_positives): each rank's
passages are padded to the longest rank's with masked slots, so the all-gather gets equal shapes
and the run trains what one process with the same global batch trains. Kept apart from
test_distributed.py: the spawned ranks import this module, which must stay light."""

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from retrofit_pipeline.process_group import Distributed
from retrofit_pipeline.sampler import answers_by_row, local_batch, query_batches
from retrofit_pipeline.trainer import train_encoder
from retrofit_pipeline.training import TrainingSettings
from synthetic import training_pairs

BATCH, ROWS = 8, 32


def _data():
    """Row i has i % 3 translations (0, 1 or 2) of its positive; one negative each."""
    data = training_pairs(ROWS)
    return data.assign(negatives=[[p] for p in data["positive"].iloc[::-1]],
                       positive_translations=[[f"{p} (traduit {k})" for k in range(i % 3)] for i, p in enumerate(data["positive"])])


def _settings(device: str = "cpu") -> TrainingSettings:
    # dropout 0: ranks draw other dropout masks than one process would, so only a run without dropout can match exactly.
    return TrainingSettings(epochs=1, batch_size=BATCH, learning_rate=1e-3, max_query_length=32, max_passage_length=48, warmup_ratio=0.0,
                            seed=7, device=device, dropout=0.0, translation_positives=2, save_every_steps=100)


def test_ranks_are_padded_to_equal_passage_counts_with_masked_slots():
    data = _data()
    positives, negatives, queries = data["positive"].tolist(), data["negatives"].tolist(), data["query"].tolist()
    translations, answers = data["positive_translations"].tolist(), answers_by_row(data)
    index = np.array([0, 1, 3, 2, 4, 5])  # rank 0: rows 0, 1, 3 (1 translation), rank 1: rows 2, 4, 5 (2 + 1 + 2 = 5)
    batches = [local_batch(index, Distributed(rank, 2), positives, negatives, "", "", queries, answers, translations) for rank in (0, 1)]
    (_, passages0, mask0, labels0, extra0, *_), (_, passages1, mask1, labels1, extra1, *_) = batches
    # Rank 0: 3 positives + 1 translation + 3 negatives, padded to rank 1's 3 + 5 + 3 = 11.
    assert len(passages0) == len(passages1) == 11
    assert passages0[:4] == [positives[0], positives[1], positives[3], translations[1][0]] and passages0[7:] == [""] * 4
    assert labels0.tolist() == [0, 1, 2] and labels1.tolist() == [11, 12, 13]
    for mask in (mask0, mask1):
        assert mask.shape == (3, 22) and mask[:, 7:11].all() and int(mask.sum()) == 3 * 4  # rank 0's pads, masked for every query
    assert extra0[1].nonzero().flatten().tolist() == [3] and not extra0[[0, 2]].any()
    assert [row.nonzero().flatten().tolist() for row in extra1] == [[14, 15], [16], [17, 18]]
    # One process: the same global batch, nothing padded.
    _, alone, mask, labels, extra, *_ = local_batch(index, Distributed(), positives, negatives, "", "", queries, answers, translations)
    assert len(alone) == 6 + 6 + 6 and "" not in alone and labels.tolist() == list(range(6)) and not mask.any()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(rank: int, world_size: int, port: int, base_model: str, output: str, work: str) -> None:
    """One torchrun-like rank (gloo, CPU): the environment torchrun would set, then train_encoder."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "WORLD_SIZE": str(world_size)})
    torch.set_num_threads(1)
    try:
        train_encoder(base_model, _data(), _settings(), Path(output), Path(work))
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def test_unequal_translation_counts_train_under_two_processes_like_one(tmp_path):
    base_model = str(Path(os.environ["RETROFIT_CONFIG"]).parent / "tiny-encoder")
    data = _data()
    counts = [len(t) for t in data["positive_translations"]]
    query_ids = data["query_id"].tolist() if "query_id" in data else data["query"].tolist()
    half = BATCH // 2
    batches = query_batches(query_ids, BATCH, _settings().seed, 1)
    # The point of the test: some step's two ranks hold different numbers of translations.
    assert any(sum(counts[i] for i in b[:half]) != sum(counts[i] for i in b[half:]) for b in batches)

    one = train_encoder(base_model, data, _settings(), tmp_path / "one", tmp_path / "work-one")
    torch.multiprocessing.spawn(_rank, args=(2, _free_port(), base_model, str(tmp_path / "two"), str(tmp_path / "work-two")), nprocs=2)
    import json

    log = json.loads((tmp_path / "two" / "training_log.json").read_text())
    assert log["world_size"] == 2 and len(log["losses"]) == len(one.losses) == ROWS // BATCH
    assert max(abs(a - b) for a, b in zip(log["losses"], one.losses)) < 1e-5
    one_weights, two_weights = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for name in one_weights:  # Adam turns float noise in tiny gradients into a fraction of a step (as in test_distributed)
        assert torch.allclose(one_weights[name], two_weights[name], atol=3e-4), name
