"""Contrastive fine-tuning of a bi-encoder: InfoNCE over in-batch and mined hard negatives.

For each query the candidates are every positive in the batch plus every hard negative in the
batch; the loss is cross-entropy with temperature over cosine similarities. A candidate that is a
correct answer of the query — another positive of the same query_id (MIRACL-style data has one row
per positive), or a passage with the text of one (the same English line paired with several
languages, say) — is masked out instead of being punished as a negative. Batches are sampled so
that a query appears at most once in each.

Large batches: with `mini_batch_size` set, a step uses gradient caching (GradCache, Gao et al.
2021): all embeddings are computed without a graph, the loss's gradient with respect to them is
taken once, then each mini-batch is re-encoded with a graph (same dropout, replayed RNG) and
back-propagated. Memory then depends on the mini-batch, not the batch, and the gradient is the
full batch's.

Several processes (launched by torchrun; see distributed_training.py): every rank encodes its
share of each global batch, passages are all-gathered (with their gradients) so every query still
sees the whole global batch as negatives, and PyTorch's DistributedDataParallel averages the
gradients, overlapping the all-reduce with the backward pass — the same update as one process
with the global batch.

Resumable: every `save_every_steps` the weights, optimizer, scheduler and RNG states are written
(atomically) to `work_dir/resume`; a rerun with the same settings continues from there and ends
where an uninterrupted run would."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .artifact_io import atomic_directory
from .encoder import autocast_for, embed_batch, load_encoder, resolve_device, tokenize

logger = logging.getLogger(__name__)


@dataclass
class TrainingSettings:
    """Contrastive training of the encoder_checkpoint asset (InfoNCE over in-batch and hard negatives)."""

    epochs: int = 1  # passes over the partition's pairs
    batch_size: int = 32  # pairs per optimizer step (the global batch, over every process)
    learning_rate: float = 5e-5  # AdamW's peak learning rate (linear warmup, then linear decay to 0)
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    warmup_ratio: float = 0.1  # share of the steps spent warming the learning rate up
    temperature: float = 0.05  # InfoNCE temperature (similarities are divided by it)
    max_query_length: int = 64  # tokens a query is truncated to in training
    max_passage_length: int = 128  # tokens a passage is truncated to in training (scoring uses the model's own length)
    query_prefix: str = "query: "  # prepended to every query, in training and scoring (E5's prompt)
    passage_prefix: str = "passage: "  # prepended to every passage, in training and scoring
    precision: str = "bf16"  # bf16 | fp16 (with a gradient scaler) | fp32; used on CUDA only
    mini_batch_size: int | None = None  # gradient caching: encode at most this many texts with a graph at once
    # auto: off unless a step runs out of GPU memory, then on (decided by measurement, once); on | off
    gradient_checkpointing: str = "auto"
    compile_layers: bool = False  # torch.compile each transformer layer (regional: short compile, same code path)
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:<n>; `retrofit run --device` overrides it
    max_steps: int | None = None  # stop after this many optimizer steps (None: the epochs decide)
    save_every_steps: int = 50  # steps between resume points (weights, optimizer, scheduler, RNG)
    seed: int = 13  # batch order and initialization of anything new (LoRA)
    trust_remote_code: bool = False  # let transformers run the model repository's own code (e.g. gte-multilingual)
    launcher: str = "local"  # local | torchrun (the training asset starts torchrun through Dagster Pipes) | k8s
    nproc_per_node: int = 1  # torchrun processes (GPUs) per node
    # Several nodes: torchrun's c10d rendezvous. The asset starts this node's torchrun; every other
    # node runs the same command (retrofit_pipeline.distributed_training.torchrun_command), e.g.
    # as the pods of a Kubernetes job (launcher k8s).
    nnodes: int = 1
    rdzv_endpoint: str | None = None  # host:port of the rendezvous (needed when nnodes > 1)
    rdzv_id: str = "retrofit"  # torchrun's rendezvous id, the same on every node of one job
    k8s: dict | None = None  # launcher k8s: {image, namespace, env, resources, ...} for dagster-k8s' PipesK8sClient
    # Texts per padded sub-batch, sorted by length (None: one batch padded to its longest text).
    length_bucket_size: int | None = 16
    dropout: float | None = None  # None keeps the model's own; 0 turns dropout off (on a CPU about 1.8x faster)
    # Which weights move, and how far (levers against forgetting general retrieval):
    freeze_embeddings: bool = False  # keep the (large, multilingual) token embedding matrix fixed
    trainable_top_layers: int | None = None  # train only the top N transformer layers (embeddings frozen too); None: all
    interpolate_with_base: float = 0.0  # WiSE-FT: saved weights = (1 - a) * trained + a * base
    # Levers against forgetting and language bias (each measured by scripts/recipe_sweep.py):
    distill_weight: float = 0.0  # + w * KL(base || student) of each query's in-batch score distribution (frozen base as teacher)
    batching: str = "random"  # random | by_language: each batch holds one query language where it can (no language shortcut)
    translation_positives: int = 0  # up to this many translations of each positive join its batch as further positives
    lora: dict | None = None  # {r, alpha, dropout, target_modules}: train LoRA adapters (peft), merged into the saved weights

    def validate(self) -> None:
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"config field training.precision: choose bf16, fp16 or fp32, got {self.precision!r}")
        if not 0.0 <= self.interpolate_with_base < 1.0:
            raise ValueError(f"config field training.interpolate_with_base must be in [0, 1), got {self.interpolate_with_base}")
        if self.launcher not in ("local", "torchrun", "k8s"):
            raise ValueError(f"config field training.launcher: unknown launcher {self.launcher!r}; choose local, torchrun or k8s")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("config field training.rdzv_endpoint (host:port) is needed when training.nnodes > 1")
        if self.launcher == "k8s" and not (self.k8s or {}).get("image"):
            raise ValueError("config field training.k8s.image is needed with launcher k8s (an image with this project installed)")
        if self.batch_size < 1 or (self.mini_batch_size is not None and self.mini_batch_size < 1):
            raise ValueError("config fields training.batch_size and training.mini_batch_size must be >= 1")
        if self.batching not in ("random", "by_language"):
            raise ValueError(f"config field training.batching: choose random or by_language, got {self.batching!r}")
        if self.distill_weight < 0 or self.translation_positives < 0:
            raise ValueError("config fields training.distill_weight and training.translation_positives must be >= 0")
        if self.lora is not None:
            unknown = set(self.lora) - {"r", "alpha", "dropout", "target_modules"}
            if unknown:
                raise ValueError(f"config field training.lora: unknown key(s) {sorted(unknown)}; known: r, alpha, dropout, target_modules")
            if self.trainable_top_layers is not None or self.freeze_embeddings:
                raise ValueError("config field training.lora trains adapters only: leave trainable_top_layers and freeze_embeddings unset")
        if self.nproc_per_node < 1 or self.batch_size % self.nproc_per_node:
            raise ValueError(f"config field training.batch_size ({self.batch_size}) must be a multiple of nproc_per_node ({self.nproc_per_node})")

    def fingerprint(self, base_model: str, data_fingerprint: str) -> str:
        # Settings that change how, not what, is computed do not invalidate a resume point.
        recipe = {k: v for k, v in asdict(self).items()
                  if k not in ("device", "launcher", "save_every_steps", "nnodes", "rdzv_endpoint", "rdzv_id", "k8s", "nproc_per_node")}
        payload = json.dumps({"settings": recipe, "base": base_model, "data": data_fingerprint}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class TrainingResult:
    steps: int
    resumed_from_step: int
    losses: list[float]
    seconds: float
    samples_per_second: float
    device: str
    world_size: int = 1
    warnings: list[str] = field(default_factory=list)
    training_pairs_fingerprint: str | None = None  # pairs_fingerprint of the rows trained on

    def summary(self) -> dict:
        head = float(np.mean(self.losses[: max(1, len(self.losses) // 10)])) if self.losses else None
        tail = float(np.mean(self.losses[-max(1, len(self.losses) // 10):])) if self.losses else None
        return {
            "steps": self.steps, "resumed_from_step": self.resumed_from_step,
            "first_loss": head, "last_loss": tail, "seconds": round(self.seconds, 1),
            "samples_per_second": round(self.samples_per_second, 2), "device": self.device, "world_size": self.world_size,
            "warnings": self.warnings, "training_pairs_fingerprint": self.training_pairs_fingerprint,
        }


def data_fingerprint(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for row in frame[["query", "positive"]].itertuples(index=False):
        digest.update(row.query.encode())
        digest.update(row.positive.encode())
    if "negatives" in frame:
        for negatives in frame["negatives"]:
            digest.update("\x1f".join(negatives).encode())
    return digest.hexdigest()[:16]


def pairs_fingerprint(frame: pd.DataFrame) -> str:
    """Which training pairs these are: a hash of the rows' (pair_id, query, positive), independent
    of row order and of every other column, so the mixture and the negatives frame mined from it
    (same pairs, more columns) agree. A checkpoint records it (training_log.json) to tell its own
    training data from a mixture rebuilt since. Unlike data_fingerprint (the resume point's), it
    ignores the negatives."""
    missing = [c for c in ("pair_id", "query", "positive") if c not in frame]
    if missing:
        raise ValueError(f"pairs_fingerprint needs the columns pair_id, query and positive; missing {missing}")
    digest = hashlib.sha256()
    for row in sorted(zip(frame["pair_id"].astype(str), frame["query"], frame["positive"])):
        digest.update(json.dumps(row, ensure_ascii=False).encode())  # JSON: no field or row boundary is ambiguous
    return digest.hexdigest()[:16]


def info_nce_loss(
    query_embeddings: torch.Tensor,
    passage_embeddings: torch.Tensor,
    temperature: float,
    false_negative_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    extra_positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Query i's positive is passage labels[i] (default: passage i); every other passage is a
    negative unless masked. With `extra_positives` (True where passage j is a further positive of
    query i, e.g. a translation of its positive) the loss is the multi-positive InfoNCE:
    -log(sum over positives / sum over all unmasked candidates)."""
    scores = query_embeddings @ passage_embeddings.T / temperature
    if false_negative_mask is not None:
        scores = scores.masked_fill(false_negative_mask, torch.finfo(scores.dtype).min)
    if labels is None:
        labels = torch.arange(query_embeddings.shape[0], device=scores.device)
    if extra_positives is None or not bool(extra_positives.any()):
        return torch.nn.functional.cross_entropy(scores, labels)
    positives = extra_positives.clone()
    positives[torch.arange(len(labels), device=scores.device), labels] = True
    only_positives = scores.masked_fill(~positives, torch.finfo(scores.dtype).min)
    return (torch.logsumexp(scores, dim=1) - torch.logsumexp(only_positives, dim=1)).mean()


def distillation_loss(query_embeddings: torch.Tensor, passage_embeddings: torch.Tensor, teacher_queries: torch.Tensor,
                      teacher_passages: torch.Tensor, temperature: float, false_negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher || student) between each query's distribution over the batch's passages, both at
    `temperature` (sentence-transformers' DistillKLDivLoss pattern): the student keeps the frozen
    base's ranking of what the training data does not speak about."""
    student = query_embeddings @ passage_embeddings.T / temperature
    teacher = teacher_queries @ teacher_passages.T / temperature
    if false_negative_mask is not None:
        student = student.masked_fill(false_negative_mask, torch.finfo(student.dtype).min)
        teacher = teacher.masked_fill(false_negative_mask, torch.finfo(teacher.dtype).min)
    return torch.nn.functional.kl_div(torch.log_softmax(student, dim=1), torch.log_softmax(teacher, dim=1),
                                      log_target=True, reduction="batchmean")


def false_negative_mask(answers: list, passages: list[str], labels: list[int] | None = None) -> torch.Tensor:
    """True where passage j is a correct answer of query i (its text is one of `answers[i]`) other
    than the passage the loss treats as query i's positive (labels[i], default i)."""
    labels = list(range(len(answers))) if labels is None else labels
    positions: dict[str, list[int]] = {}
    for j, text in enumerate(passages):
        positions.setdefault(text, []).append(j)
    mask = torch.zeros(len(answers), len(passages), dtype=torch.bool)
    for i, texts in enumerate(answers):
        for text in texts:
            for j in positions.get(text, ()):
                mask[i, j] = True
    mask[torch.arange(len(answers)), torch.tensor(labels, dtype=torch.long)] = False
    return mask


def answers_by_row(data: pd.DataFrame) -> list[frozenset[str]]:
    """Every correct passage of each row's query: the positives of all rows with its query_id, plus
    the query's other positives in the raw data (column other_positives, when mining added it)."""
    query_ids = data["query_id"] if "query_id" in data else data["query"]
    by_query: dict[str, set[str]] = {}
    for query_id, positive in zip(query_ids, data["positive"]):
        by_query.setdefault(query_id, set()).add(positive)
    if "other_positives" in data:
        for query_id, others in zip(query_ids, data["other_positives"]):
            by_query[query_id].update(others)
    frozen = {key: frozenset(value) for key, value in by_query.items()}
    return [frozen[query_id] for query_id in query_ids]


@dataclass
class Distributed:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    ddp: torch.nn.Module | None = None  # the DistributedDataParallel wrapper the forward passes go through

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str) -> "Distributed":
        import os

        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenation over ranks; gradients flow back to each rank's own rows (summed over ranks)."""
        if self.world_size == 1:
            return tensor
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor))

    def wrap(self, model, device: str) -> None:
        """Puts the model under DistributedDataParallel (several processes only): gradients are
        averaged over ranks bucket by bucket while the backward pass still runs."""
        if self.world_size == 1:
            return
        from torch.nn.parallel import DistributedDataParallel

        self.ddp = DistributedDataParallel(model, device_ids=[self.local_rank] if device.startswith("cuda") else None,
                                           broadcast_buffers=False)

    def no_sync(self):
        """Gradient accumulation without an all-reduce (every backward pass of a step but the last)."""
        return self.ddp.no_sync() if self.ddp is not None else nullcontext()

    def mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor) / self.world_size

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def _rng_state(device: str) -> tuple:
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.startswith("cuda") else None)


def _restore_rng_state(state: tuple, device: str) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _embed(model, texts: list[str], max_length: int, device: str, precision: str, bucket_size: int | None = None,
           forward: torch.nn.Module | None = None) -> torch.Tensor:
    """Embeddings of `texts` in order, with a graph when gradients are on. With `bucket_size`, the
    texts are sorted by length and encoded `bucket_size` at a time, each group padded only to its
    own longest text: the same result as one padded batch, without computing on padding."""
    with autocast_for(device, precision):
        if not bucket_size or len(texts) <= bucket_size:
            return embed_batch(model, tokenize(model, texts, max_length), forward)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts = [embed_batch(model, tokenize(model, [texts[i] for i in order[start:start + bucket_size]], max_length), forward)
                 for start in range(0, len(texts), bucket_size)]
        return torch.cat(parts)[torch.argsort(torch.tensor(order, device=parts[0].device))]


def contrastive_backward(
    model,
    queries: list[str],
    passages: list[str],
    mask: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainingSettings,
    device: str,
    world: Distributed = Distributed(),
    scaler: "torch.amp.GradScaler | None" = None,
    extra_positives: torch.Tensor | None = None,
    teacher=None,
) -> torch.Tensor:
    """Loss of one step (this rank's queries against every rank's passages), gradients accumulated
    into the model (multiplied by the fp16 scaler's scale when there is one). With mini_batch_size
    set and exceeded, by gradient caching. `teacher` (the frozen base, for distill_weight) is
    encoded without gradients."""
    scaled = scaler.scale if scaler is not None else (lambda loss: loss)
    teacher_q = teacher_p = None
    if teacher is not None and settings.distill_weight > 0:
        with torch.no_grad():
            teacher_q = _embed(teacher, queries, settings.max_query_length, device, settings.precision, settings.length_bucket_size)
            teacher_p = world.all_gather(_embed(teacher, passages, settings.max_passage_length, device, settings.precision,
                                                settings.length_bucket_size))

    def loss_of(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        p = world.all_gather(p)
        loss = info_nce_loss(q, p, settings.temperature, mask, labels, extra_positives)
        if teacher_q is not None:
            loss = loss + settings.distill_weight * distillation_loss(q, p, teacher_q, teacher_p, settings.temperature, mask)
        return loss

    chunk = settings.mini_batch_size
    if chunk is None or max(len(queries), len(passages)) <= chunk:
        q = _embed(model, queries, settings.max_query_length, device, settings.precision, settings.length_bucket_size, world.ddp)
        p = _embed(model, passages, settings.max_passage_length, device, settings.precision, settings.length_bucket_size, world.ddp)
        loss = loss_of(q, p)
        scaled(loss).backward()
        return loss.detach()

    parts = [(queries[i : i + chunk], settings.max_query_length) for i in range(0, len(queries), chunk)]
    parts += [(passages[i : i + chunk], settings.max_passage_length) for i in range(0, len(passages), chunk)]
    states, cached = [], []
    with torch.no_grad():  # pass 1: embeddings only, remembering each chunk's RNG state (dropout)
        for texts, max_length in parts:
            states.append(_rng_state(device))
            cached.append(_embed(model, texts, max_length, device, settings.precision, settings.length_bucket_size, world.ddp))
    after = _rng_state(device)
    n_query_parts = -(-len(queries) // chunk)
    q = torch.cat(cached[:n_query_parts]).requires_grad_()
    p = torch.cat(cached[n_query_parts:]).requires_grad_()
    loss = loss_of(q, p)
    scaled(loss).backward()  # gradients with respect to the embeddings (p's summed over ranks)
    grads = list(q.grad.split(chunk)) + list(p.grad.split(chunk))
    for number, ((texts, max_length), state, grad) in enumerate(zip(parts, states, grads)):  # pass 2: replay with a graph
        _restore_rng_state(state, device)
        last = number == len(parts) - 1
        with nullcontext() if last else world.no_sync():  # one all-reduce per step, in the last backward
            embeddings = _embed(model, texts, max_length, device, settings.precision, settings.length_bucket_size, world.ddp)
            torch.dot(embeddings.flatten(), grad.flatten()).backward()
    _restore_rng_state(after, device)
    return loss.detach()


def training_step(
    model,
    optimizer: torch.optim.Optimizer,
    queries: list[str],
    passages: list[str],
    mask: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainingSettings,
    device: str,
    world: Distributed = Distributed(),
    scaler: "torch.amp.GradScaler | None" = None,
    extra_positives: torch.Tensor | None = None,
    teacher=None,
) -> torch.Tensor:
    """One optimizer step on one batch (this rank's share of it): gradients (averaged over ranks by
    DistributedDataParallel during the backward pass), clipped, applied (through the fp16 gradient
    scaler when there is one, which skips a step whose gradients overflowed). The loop in
    train_encoder and the benchmarks run exactly this."""
    loss = contrastive_backward(model, queries, passages, mask, labels, settings, device, world, scaler, extra_positives, teacher)
    parameters = [p for p in model.parameters() if p.grad is not None]
    if scaler is not None:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def make_optimizer(model, settings: TrainingSettings) -> torch.optim.Optimizer:
    """AdamW with the fused kernel, as the Hugging Face Trainer uses by default; like it, no weight
    decay on biases and LayerNorm weights (decaying them only pulls normalisation towards zero).
    Frozen parameters (freeze_embeddings) are left out."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, fused=True)


def enable_gradient_checkpointing(model) -> None:
    model[0].auto_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def checkpointing_enabled(model) -> bool:
    return bool(getattr(model[0].auto_model, "is_gradient_checkpointing", False))


def compile_layers(model) -> int:
    """torch.compile applied per transformer layer (regional compilation): every layer has the
    same code, so one compiled graph serves all and compile time stays short. Returns the count."""
    blocks = getattr(getattr(model[0].auto_model, "encoder", None), "layer", None)
    if blocks is None:
        raise ValueError(f"training.compile_layers: {type(model[0].auto_model).__name__} has no encoder.layer list")
    for block in blocks:
        block.compile(dynamic=True)
    return len(blocks)


DROPOUT_CONFIG_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "hidden_dropout")


def set_dropout(model, probability: float) -> dict[str, float]:
    """Every dropout of the encoder, including attention dropout, to `probability`, for this run.
    Returns the model config's own rates, which `restore_dropout_config` puts back before saving:
    dropout is a training setting, and a checkpoint saved with 0 would silently fine-tune without
    it later."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = probability
    transformer = model[0].auto_model
    original = {name: getattr(transformer.config, name) for name in DROPOUT_CONFIG_FIELDS if hasattr(transformer.config, name)}
    for name in original:
        setattr(transformer.config, name, probability)  # some attention implementations read it at call time
    for module in transformer.modules():  # attention layers that read the rate at call time (sdpa)
        if hasattr(module, "dropout_prob"):
            module.dropout_prob = probability
    return original


def restore_dropout_config(model, original: dict[str, float]) -> None:
    for name, value in original.items():
        setattr(model[0].auto_model.config, name, value)


def train_only_top_layers(model, layers: int) -> int:
    """Freezes the embeddings and every transformer layer but the top `layers`; returns how many
    parameters stay trainable. Frozen bottom layers need no backward pass at all."""
    transformer = model[0].auto_model
    blocks = getattr(getattr(transformer, "encoder", None), "layer", None)
    if blocks is None:
        raise ValueError(f"training.trainable_top_layers: {type(transformer).__name__} has no encoder.layer list to choose from")
    if not 0 < layers <= len(blocks):
        raise ValueError(f"training.trainable_top_layers must be in 1..{len(blocks)}, got {layers}")
    for parameter in transformer.parameters():
        parameter.requires_grad_(False)
    for block in list(blocks)[len(blocks) - layers:]:
        for parameter in block.parameters():
            parameter.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_token_embeddings(model) -> int:
    """Stops the word-embedding matrix from training; returns how many parameters it holds."""
    embeddings = model[0].auto_model.get_input_embeddings()
    embeddings.weight.requires_grad_(False)
    return embeddings.weight.numel()


def interpolate_weights(model, base_state: dict[str, torch.Tensor], base_weight: float) -> None:
    """WiSE-FT (Wortsman et al. 2022): moves every floating-point weight `base_weight` of the way
    back to the base model, which keeps much of the fine-tuning gain while restoring robustness."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in base_state and tensor.is_floating_point():
                tensor.mul_(1.0 - base_weight).add_(base_state[name].to(tensor.device, tensor.dtype), alpha=base_weight)


def _linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _pack(order: list[int], query_ids: list, batch_size: int) -> tuple[list[np.ndarray], list[int]]:
    """Full batches from the rows in `order`, each query at most once per batch (a row whose query
    is already in the batch waits for the next one); returns them and the rows left over."""
    order = order[::-1]  # popped from the end
    batches, waiting = [], []
    while True:
        batch, seen, still_waiting = [], set(), []
        for row in waiting:
            if len(batch) < batch_size and query_ids[row] not in seen:
                batch.append(row)
                seen.add(query_ids[row])
            else:
                still_waiting.append(row)
        while len(batch) < batch_size and order:
            row = order.pop()
            if query_ids[row] in seen:
                still_waiting.append(row)
            else:
                batch.append(row)
                seen.add(query_ids[row])
        waiting = still_waiting
        if len(batch) < batch_size:
            return batches, batch + waiting
        batches.append(np.array(batch))


def _batches(query_ids: list, batch_size: int, seed: int, epochs: int, groups: list | None = None) -> list[np.ndarray]:
    """The whole run's batch order, fixed by the seed (a resumed run sees the same batches), each
    query at most once per batch. With `groups` (e.g. each row's query language) a batch is drawn
    from one group while the group fills one; the rest of every group is packed into mixed
    batches, and the epoch's batches are shuffled. Rows left over at the end of an epoch (fewer
    than a batch) are dropped, as before."""
    batches = []
    for epoch in range(epochs):
        rng = np.random.default_rng(seed + epoch)
        order = rng.permutation(len(query_ids)).tolist()
        if groups is None:
            batches += _pack(order, query_ids, batch_size)[0]
            continue
        epoch_batches, leftovers = [], []
        for group in sorted(set(groups), key=str):
            members = [row for row in order if groups[row] == group]
            full, left = _pack(members, query_ids, batch_size)
            epoch_batches += full
            leftovers += left
        position = {row: i for i, row in enumerate(order)}
        epoch_batches += _pack(sorted(leftovers, key=position.__getitem__), query_ids, batch_size)[0]
        batches += [epoch_batches[i] for i in rng.permutation(len(epoch_batches))]
    return batches


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _local_batch(index: np.ndarray, world: Distributed, positives, negatives, query_prefix: str, passage_prefix: str, queries, answers,
                 translations=None):
    """This rank's share of a global batch: its query texts, its passage texts, and for its queries
    the label, the false-negative mask and the further positives (translations of the positive,
    `translations[i]`, when given) over the passages gathered from every rank (rank order).

    The all-gather needs as many passages on every rank; where rows differ in their number of
    translations or negatives, each rank's passages are padded to the longest rank's with empty
    texts, masked for every query (a masked candidate adds nothing to the loss). One process is
    never padded."""
    share = len(index) // world.world_size
    shards = [index[r * share : (r + 1) * share] for r in range(world.world_size)]
    shard_translations = [[translations[i] if translations is not None else [] for i in shard] for shard in shards]
    shard_passages = [[positives[i] for i in shard] + [t for texts in row_translations for t in texts] + [n for i in shard for n in negatives[i]]
                      for shard, row_translations in zip(shards, shard_translations)]
    width = max(len(texts) for texts in shard_passages)
    padding = [rank * width + j for rank, texts in enumerate(shard_passages) for j in range(len(texts), width)]
    shard_passages = [texts + [""] * (width - len(texts)) for texts in shard_passages]
    mine, offset = shards[world.rank], world.rank * width
    labels = list(range(offset, offset + len(mine)))
    extra, start = [], offset + len(mine)
    for row_translations in shard_translations[world.rank]:
        extra.append(list(range(start, start + len(row_translations))))
        start += len(row_translations)
    mask = false_negative_mask([answers[i] for i in mine], [t for texts in shard_passages for t in texts], labels)
    mask[:, padding] = True
    extra_positives = None
    if translations is not None:
        extra_positives = torch.zeros_like(mask)
        for row, columns in enumerate(extra):
            extra_positives[row, columns] = True
        mask &= ~extra_positives  # a translation in the batch is a positive, not a masked false negative
    return (
        [query_prefix + queries[i] for i in mine],
        [passage_prefix + t for t in shard_passages[world.rank]],
        mask, torch.tensor(labels), extra_positives,
    )


def apply_lora(model, options: dict) -> int:
    """Wraps the encoder in LoRA adapters (peft); only the adapters train. Returns their size."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=int(options.get("r", 16)), lora_alpha=int(options.get("alpha", 32)), lora_dropout=float(options.get("dropout", 0.0)),
                        target_modules=list(options.get("target_modules", ["query", "key", "value", "dense"])), bias="none")
    model[0].model = get_peft_model(model[0].model, config)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge_lora(model) -> None:
    """The adapters merged into the weights: the checkpoint is a plain model again."""
    if hasattr(model[0].model, "merge_and_unload"):
        model[0].model = model[0].model.merge_and_unload()


def translations_by_row(data: pd.DataFrame, limit: int) -> list[list[str]] | None:
    """Up to `limit` translations of each row's positive (column positive_translations, added when
    the negatives are mined), or None when the recipe adds none."""
    if limit <= 0 or "positive_translations" not in data:
        return None
    return [list(texts)[:limit] for texts in data["positive_translations"]]


def train_encoder(
    base_model: str,
    data: pd.DataFrame,
    settings: TrainingSettings,
    output_dir: Path,
    work_dir: Path,
    model_card: Callable[[TrainingResult], str] | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
) -> TrainingResult:
    """Trains and writes a sentence-transformers checkpoint (safetensors) to `output_dir`.

    Under torchrun every rank calls this with the same arguments; rank 0 writes the files."""
    settings.validate()
    if len(data) < settings.batch_size:
        raise ValueError(f"training data has {len(data)} rows, fewer than one batch ({settings.batch_size})")
    device = resolve_device(settings.device)
    world = Distributed.from_environment(device)
    if world.world_size > 1:
        if settings.batch_size % world.world_size:
            raise ValueError(f"batch_size {settings.batch_size} must be a multiple of the {world.world_size} processes")
        if device.startswith("cuda"):
            device = f"cuda:{world.local_rank}"
            torch.cuda.set_device(device)
    _set_seed(settings.seed)
    # The model keeps its own max_seq_length and tokenizer limits: the training lengths are passed
    # to the tokenizer per batch, so the saved checkpoint reads what its base reads.
    model = load_encoder(
        base_model, device=device, trust_remote_code=settings.trust_remote_code,
        query_prefix=settings.query_prefix, passage_prefix=settings.passage_prefix,
    )
    teacher = None
    if settings.distill_weight > 0:  # the frozen base: its in-batch score distributions are the distillation target
        teacher = load_encoder(base_model, device=device, trust_remote_code=settings.trust_remote_code).eval().requires_grad_(False)
    base_state = None
    if settings.interpolate_with_base > 0:
        base_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    # The encoder's dropout before the adapters exist: set_dropout changes every dropout module, and
    # LoRA's own (training.lora.dropout) must stay as configured.
    original_dropout = set_dropout(model, settings.dropout) if settings.dropout is not None else {}
    if settings.lora is not None:
        apply_lora(model, settings.lora)
    if settings.gradient_checkpointing == "on":
        enable_gradient_checkpointing(model)
    if settings.compile_layers:
        compile_layers(model)
    if settings.freeze_embeddings:
        freeze_token_embeddings(model)
    if settings.trainable_top_layers is not None:
        train_only_top_layers(model, settings.trainable_top_layers)
    # A BERT pooler is computed but never used by mean/CLS pooling of token embeddings: it gets no
    # gradient, which DistributedDataParallel would wait for. It stays as it is.
    pooler = getattr(model[0].auto_model, "pooler", None)
    if pooler is not None:
        pooler.requires_grad_(False)
    world.wrap(model, device)
    if world.world_size > 1:
        torch.manual_seed(settings.seed + world.rank)  # ranks draw different dropout masks
    query_ids = data["query_id"].tolist() if "query_id" in data else data["query"].tolist()
    groups = data["language"].tolist() if settings.batching == "by_language" else None
    batches = _batches(query_ids, settings.batch_size, settings.seed, settings.epochs, groups)
    if not batches:
        raise ValueError(f"training data has too few distinct queries ({len(set(query_ids))}) for one batch of {settings.batch_size}")
    total_steps = len(batches) if settings.max_steps is None else min(len(batches), settings.max_steps)
    optimizer = make_optimizer(model, settings)
    scheduler = _linear_schedule(optimizer, int(total_steps * settings.warmup_ratio), total_steps)
    # fp16 needs loss scaling (its gradients underflow); bf16 has fp32's range and does not.
    scaler = torch.amp.GradScaler("cuda") if settings.precision == "fp16" and device.startswith("cuda") else None

    queries = data["query"].tolist()
    answers = answers_by_row(data)
    positives = data["positive"].tolist()
    negatives = data["negatives"].tolist() if "negatives" in data else [[] for _ in queries]
    translations = translations_by_row(data, settings.translation_positives)

    fingerprint = settings.fingerprint(base_model, data_fingerprint(data))
    resume_dir = Path(work_dir) / "resume"
    start_step, losses, warnings = 0, [], []
    state_file = resume_dir / "trainer_state.pt"
    if state_file.exists():
        state = torch.load(state_file, weights_only=True)
        if state["fingerprint"] != fingerprint:
            warnings.append(f"a resume point at step {state['step']} exists in {resume_dir} but was made with other data or "
                            "settings: training starts from step 0")
        else:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(resume_dir / "model.safetensors", device=device))
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            saved_world = len(state.get("rng", []))
            if saved_world == world.world_size:
                _restore_rng_state(state["rng"][world.rank], device)
            else:
                # The global batches do not depend on the world size, so weights, optimizer and
                # schedule carry over; only the per-rank dropout streams cannot.
                warnings.append(f"resumed at step {state['step']} under {world.world_size} process(es), saved under "
                                f"{saved_world}: dropout random streams restart, so the result differs from an uninterrupted run")
                torch.manual_seed(settings.seed + 1000 * int(state["step"]) + world.rank)
            start_step, losses = int(state["step"]), list(state["losses"])
    if world.is_main:
        for warning in warnings:
            logger.warning(warning)

    def save_resume_point(step: int) -> None:
        from safetensors.torch import save_file

        rng_states = [None] * world.world_size
        if world.world_size > 1:
            import torch.distributed as dist

            dist.all_gather_object(rng_states, _rng_state(device))
        else:
            rng_states = [_rng_state(device)]
        if world.is_main:
            with atomic_directory(resume_dir) as tmp:
                save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
                torch.save({
                    "fingerprint": fingerprint, "step": step, "losses": losses,
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                }, tmp / "trainer_state.pt")
        world.barrier()

    model.train()
    started = time.perf_counter()
    samples = 0
    progress = tqdm(range(start_step, total_steps), desc="train", initial=start_step, total=total_steps, leave=False,
                    disable=not world.is_main)
    for step in progress:
        batch_queries, batch_passages, mask, labels, extra = _local_batch(
            batches[step], world, positives, negatives, settings.query_prefix, settings.passage_prefix, queries, answers, translations)
        extra = extra.to(device) if extra is not None else None

        def step_once():
            return training_step(model, optimizer, batch_queries, batch_passages, mask.to(device), labels.to(device), settings, device,
                                 world, scaler, extra, teacher)

        try:
            loss = step_once()
        except torch.OutOfMemoryError:
            # "auto": checkpointing costs a recomputation, so it is turned on only when a step does not fit.
            if settings.gradient_checkpointing != "auto" or checkpointing_enabled(model):
                raise
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            enable_gradient_checkpointing(model)
            warnings.append(f"step {step + 1} ran out of GPU memory: gradient checkpointing turned on (gradient_checkpointing: auto)")
            loss = step_once()
        scheduler.step()
        losses.append(world.mean(float(loss)))
        samples += len(batches[step])
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
        done = step + 1
        if on_progress is not None and world.is_main:
            on_progress(done, total_steps, losses[-1])
        if done % settings.save_every_steps == 0 and done < total_steps:
            save_resume_point(done)
    seconds = time.perf_counter() - started
    result = TrainingResult(
        steps=total_steps, resumed_from_step=start_step, losses=losses, seconds=seconds,
        samples_per_second=samples / seconds if seconds > 0 else 0.0, device=device, world_size=world.world_size,
        # Rows without pair ids (hand-made frames; every pipeline frame has them) have no fingerprint.
        warnings=warnings, training_pairs_fingerprint=pairs_fingerprint(data) if "pair_id" in data else None,
    )
    model.eval()
    merge_lora(model)
    if base_state is not None:
        interpolate_weights(model, base_state, settings.interpolate_with_base)
    restore_dropout_config(model, original_dropout)
    if world.is_main:
        with atomic_directory(Path(output_dir)) as tmp:
            model.save(str(tmp), safe_serialization=True)
            (tmp / "training_log.json").write_text(json.dumps({"losses": losses, **result.summary()}, indent=2))
            if model_card is not None:
                (tmp / "README.md").write_text(model_card(result), encoding="utf-8")
        # The finished checkpoint supersedes the resume point.
        if resume_dir.exists():
            import shutil

            shutil.rmtree(resume_dir)
    world.barrier()
    return result
