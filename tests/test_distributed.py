"""Large batches and several processes: gradient caching gives the full batch's gradient, and a
torchrun job (2 processes, gloo, CPU) launched by the encoder_checkpoint asset through Dagster
Pipes trains the same weights as one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from dagster import AssetKey, DagsterInstance, materialize
from safetensors.torch import load_file
from transformers import BertModel

from retrofit_pipeline.config import load_config
from retrofit_pipeline.dagster_defs.resources import RetrofitSettings
from retrofit_pipeline.definitions import defs
from retrofit_pipeline.encoder import load_encoder
from retrofit_pipeline.paths import ArtifactPaths
from retrofit_pipeline.losses import false_negative_mask, info_nce_loss
from retrofit_pipeline.trainer import contrastive_backward, embed_for_training
from retrofit_pipeline.training import TrainingSettings
from synthetic import training_pairs


@pytest.fixture(scope="module")
def deterministic_encoder(tmp_path_factory):
    """The tiny encoder without dropout: runs that split a batch differently can then agree exactly."""
    source = Path(os.environ["RETROFIT_CONFIG"]).parent / "tiny-encoder"
    target = tmp_path_factory.mktemp("no-dropout") / "encoder"
    model = BertModel.from_pretrained(source, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model.save_pretrained(target, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            (target / name).write_bytes((source / name).read_bytes())
    return target


def _gradients(model_dir, settings):
    data = training_pairs(24).assign(negatives=lambda f: [[p] for p in f["positive"].iloc[::-1]])
    model = load_encoder(str(model_dir), device="cpu")
    model.train()
    positives = data["positive"].tolist()
    passages = positives + [n[0] for n in data["negatives"]]
    mask = false_negative_mask([[p] for p in positives], passages)
    loss = contrastive_backward(model, ["query: " + q for q in data["query"]], ["passage: " + p for p in passages],
                                mask, torch.arange(len(data)), settings, "cpu")
    return loss, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_caching_equals_the_full_batch_gradient(deterministic_encoder):
    settings = TrainingSettings(max_query_length=32, max_passage_length=48, device="cpu")
    full_loss, full = _gradients(deterministic_encoder, settings)
    settings.mini_batch_size = 5  # 24 queries and 48 passages in chunks of at most 5 texts
    cached_loss, cached = _gradients(deterministic_encoder, settings)
    assert torch.allclose(full_loss, cached_loss, atol=1e-6)
    assert full.keys() == cached.keys()
    for name in full:
        assert torch.allclose(full[name], cached[name], atol=1e-5, rtol=1e-4), name


def test_gradient_caching_replays_dropout_exactly():
    """With dropout on, the cached gradient must equal the gradient of the same loss computed with a
    graph, chunk by chunk, from the same random state: only a correct RNG replay in the second
    pass draws the dropout masks of the first."""
    model_dir = Path(os.environ["RETROFIT_CONFIG"]).parent / "tiny-encoder"  # dropout 0.1
    settings = TrainingSettings(max_query_length=32, max_passage_length=48, device="cpu", mini_batch_size=5)
    data = training_pairs(12)
    queries = ["query: " + q for q in data["query"]]
    passages = ["passage: " + p for p in data["positive"]]
    mask = false_negative_mask([[p] for p in passages], passages)
    labels = torch.arange(len(data))

    def fresh_model():
        model = load_encoder(str(model_dir), device="cpu")
        model.train()
        return model

    model = fresh_model()
    torch.manual_seed(5)
    a = embed_for_training(model, queries[:5], 32, "cpu", "fp32")
    b = embed_for_training(model, queries[:5], 32, "cpu", "fp32")
    assert not torch.allclose(a, b), "dropout must be active for this test to mean anything"

    torch.manual_seed(11)
    cached_model = fresh_model()
    cached_loss = contrastive_backward(cached_model, queries, passages, mask, labels, settings, "cpu")
    cached = {n: p.grad.clone() for n, p in cached_model.named_parameters() if p.grad is not None}

    torch.manual_seed(11)
    reference_model = fresh_model()
    chunks = [(queries[i:i + 5], 32) for i in range(0, 12, 5)] + [(passages[i:i + 5], 48) for i in range(0, 12, 5)]
    embeddings = [embed_for_training(reference_model, texts, length, "cpu", "fp32") for texts, length in chunks]
    reference_loss = info_nce_loss(torch.cat(embeddings[:3]), torch.cat(embeddings[3:]), settings.temperature, mask, labels)
    reference_loss.backward()
    assert torch.allclose(cached_loss, reference_loss.detach(), atol=1e-6)
    for name, grad in cached.items():
        assert torch.allclose(grad, dict(reference_model.named_parameters())[name].grad, atol=1e-5, rtol=1e-4), name


def _assert_same_losses(several, one):
    """Each step's loss agrees to float32 reduction noise. The ranks' gradients are summed in another
    order than one process's, so the weights drift apart a little with every step: the largest
    difference measured was 2e-6 here and 2.7e-5 on CI's CPU, against losses that start near 3.7
    and fall to 1e-3. The tolerance is 1e-4 of the first loss (the loss's scale), not of each step's:
    a late loss near zero says nothing about the noise. A wrong shard changes the very first loss,
    a missing gradient all-reduce every later one, each by far more."""
    assert len(several) == len(one) >= 5
    tolerance = 1e-4 * max(abs(x) for x in one)
    for step, (a, b) in enumerate(zip(several, one)):
        assert abs(a - b) <= tolerance, (step, a, b, tolerance)


def _assert_same_updates(several, one, base):
    """Two trainings from `base` moved every weight tensor alike. Gloo sums the ranks' gradients in
    another order than one process, and Adam divides by the gradient's own scale: an element whose
    gradient is near zero may step the other way (a few times the learning rate, far above any
    fixed atol), so single elements are not evidence. A wrong label, mask or shard changes the
    gradient of every element, i.e. the whole update: each tensor's updates must agree to within a
    small fraction of their size (measured: about 1e-5 of it on a 2-core CPU)."""
    moved = 0
    for name in base:
        update_several, update_one = several[name] - base[name], one[name] - base[name]
        size = update_one.norm().item()
        # 1e-4: a key bias gets no gradient (softmax ignores a shift), so its tiny update is noise alone.
        assert (update_several - update_one).norm().item() <= 0.05 * size + 1e-4, name
        moved += size > 1e-4
    assert moved, "training must move the weights for this comparison to mean anything"


@pytest.fixture(scope="module")
def torchrun_preset(deterministic_encoder, tmp_path_factory):
    base = Path(os.environ["RETROFIT_CONFIG"])
    preset = tmp_path_factory.mktemp("torchrun") / "tiny_torchrun.yaml"
    preset.write_text(yaml.safe_dump({
        "extends": str(base), "name": "tiny-torchrun", "base_model": str(deterministic_encoder),
        # Distillation from a stored teacher: the asset fills the teacher's store before the launch,
        # every rank reads its batch's rows from it, and the gathered teacher scores must match one process's.
        "negatives": {"teacher": str(base.parent / "tiny-encoder")},
        "training": {"launcher": "torchrun", "nproc_per_node": 2, "epochs": 3, "save_every_steps": 3, "distill_weight": 0.5,
                     "distill_from": "teacher"},
    }))
    return preset


def test_torchrun_through_dagster_pipes_trains_what_one_process_trains(torchrun_preset):
    instance = DagsterInstance.ephemeral()
    settings = RetrofitSettings(config_path=str(torchrun_preset), device="cpu")
    everything = list(defs.assets) + list(defs.asset_checks)
    for selection, partition in ((["raw_corpora", "evaluation_set", "training_pool"], None), (["training_mixture", "hard_negatives"], "small"),
                                 (["encoder_checkpoint"], "small")):
        result = materialize(everything, selection=selection, partition_key=partition, instance=instance, resources={"settings": settings})
        assert result.success
    event = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey("encoder_checkpoint")][-1]
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata["world_size"] == 2 and metadata["device"] == "cpu" and metadata["steps"] >= 5
    assert "data:image/png;base64" in metadata["loss_curve"]
    # Distilled from the stored teacher: the asset encoded every training text once, the ranks read them.
    assert metadata["distillation_teacher"]["teacher"].endswith("tiny-encoder") and metadata["distillation_teacher"]["encoded"] == 0
    logs = [r.user_message for r in instance.all_logs(result.run_id)]
    assert any("step" in m and "loss" in m for m in logs)  # rank 0's progress reached the Dagster run

    checkpoint = ArtifactPaths(load_config(torchrun_preset).experiment_dir).checkpoint("small")
    two_processes = load_file(checkpoint / "model.safetensors")
    two_processes_losses = json.loads((checkpoint / "training_log.json").read_text())["losses"]
    # The same program, one process, the whole global batch on it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    subprocess.run([sys.executable, "-m", "retrofit_pipeline.distributed_training", "--config", str(torchrun_preset),
                    "--scale", "small", "--device", "cpu"], check=True, env=env)
    one_process = load_file(checkpoint / "model.safetensors")
    one_process_losses = json.loads((checkpoint / "training_log.json").read_text())["losses"]
    assert len(one_process_losses) == len(two_processes_losses) >= 5
    _assert_same_losses(two_processes_losses, one_process_losses)
    # Per-batch losses are noisy; three passes over the same rows must fit them.
    assert sum(one_process_losses[-3:]) < sum(one_process_losses[:3])
    base = load_file(Path(load_config(torchrun_preset).base_model) / "model.safetensors")
    assert two_processes.keys() == one_process.keys() == base.keys()
    _assert_same_updates(two_processes, one_process, base)


def test_two_torchrun_nodes_on_loopback_train_what_one_process_trains(deterministic_encoder, tmp_path):
    """Multi-node training through torchrun's c10d rendezvous: two "nodes" (processes launched
    separately, one GPU-less rank each, gloo over 127.0.0.1) with the command the asset prints
    for every node, against one process with the same global batch."""
    import socket

    from retrofit_pipeline.distributed_training import torchrun_command

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    preset = tmp_path / "two_nodes.yaml"
    preset.write_text(yaml.safe_dump({
        "extends": os.environ["RETROFIT_CONFIG"], "name": "tiny-two-nodes", "artifacts_dir": str(tmp_path / "artifacts"),
        "base_model": str(deterministic_encoder),
        "training": {"launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1, "rdzv_endpoint": f"127.0.0.1:{port}", "epochs": 2},
    }))
    config = load_config(preset)
    settings = RetrofitSettings(config_path=str(preset), device="cpu")
    for selection, partition in ((["raw_corpora", "evaluation_set", "training_pool"], None), (["training_mixture", "hard_negatives"], "small")):
        assert materialize(list(defs.assets), selection=selection, partition_key=partition, instance=DagsterInstance.ephemeral(),
                           resources={"settings": settings}).success
    checkpoint = ArtifactPaths(config.experiment_dir).checkpoint("small")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    subprocess.run([sys.executable, "-m", "retrofit_pipeline.distributed_training", "--config", str(preset), "--scale", "small",
                    "--device", "cpu"], check=True, env=env)
    one_process = load_file(checkpoint / "model.safetensors")
    one_process_losses = json.loads((checkpoint / "training_log.json").read_text())["losses"]

    nodes = [subprocess.Popen(torchrun_command(config, "small", "cpu", node_rank=rank), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for node in nodes:
        assert node.wait(timeout=600) == 0, node.stderr.read()[-3000:]
    two_nodes = load_file(checkpoint / "model.safetensors")
    log = json.loads((checkpoint / "training_log.json").read_text())
    assert log["world_size"] == 2 and len(log["losses"]) == len(one_process_losses) >= 5
    _assert_same_losses(log["losses"], one_process_losses)
    _assert_same_updates(two_nodes, one_process, load_file(deterministic_encoder / "model.safetensors"))
