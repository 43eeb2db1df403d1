"""The training loop: contrastive fine-tuning of a bi-encoder (losses/, sampler.py, weights.py).

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

import json
import logging
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .artifact_io import atomic_directory
from .encoder import autocast_for, embed_batch, load_encoder, resolve_device, tokenize
from .losses import distillation_loss, info_nce_loss
from .process_group import Distributed
from .sampler import answers_by_row, local_batch, query_batches, translations_by_row
from .training import TrainingResult, TrainingSettings, data_fingerprint, pairs_fingerprint
from .weights import (apply_lora, checkpointing_enabled, compile_layers, enable_gradient_checkpointing, freeze_token_embeddings,
                      interpolate_weights, merge_lora, restore_dropout_config, set_dropout, train_only_top_layers)

if TYPE_CHECKING:  # teacher.py loads mteb's scoring path; the loop only reads its vectors
    from .teacher import TeacherTargets

logger = logging.getLogger(__name__)


def _rng_state(device: str) -> tuple:
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.startswith("cuda") else None)


def _restore_rng_state(state: tuple, device: str) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def embed_for_training(model, texts: list[str], max_length: int, device: str, precision: str, bucket_size: int | None = None,
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
    teacher_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Loss of one step (this rank's queries against every rank's passages), gradients accumulated
    into the model (multiplied by the fp16 scaler's scale when there is one). With mini_batch_size
    set and exceeded, by gradient caching. `teacher_embeddings` (for distill_weight: this rank's
    queries and every rank's passages as the teacher embeds them, without gradients) add the
    distillation term."""
    scaled = scaler.scale if scaler is not None else (lambda loss: loss)
    teacher_q, teacher_p = teacher_embeddings if teacher_embeddings is not None and settings.distill_weight > 0 else (None, None)

    def loss_of(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        p = world.all_gather(p)
        loss = info_nce_loss(q, p, settings.temperature, mask, labels, extra_positives)
        if teacher_q is not None:
            loss = loss + settings.distill_weight * distillation_loss(q, p, teacher_q, teacher_p, settings.temperature, mask)
        return loss

    chunk = settings.mini_batch_size
    if chunk is None or max(len(queries), len(passages)) <= chunk:
        q = embed_for_training(model, queries, settings.max_query_length, device, settings.precision, settings.length_bucket_size, world.ddp)
        p = embed_for_training(model, passages, settings.max_passage_length, device, settings.precision, settings.length_bucket_size, world.ddp)
        loss = loss_of(q, p)
        scaled(loss).backward()
        return loss.detach()

    parts = [(queries[i : i + chunk], settings.max_query_length) for i in range(0, len(queries), chunk)]
    parts += [(passages[i : i + chunk], settings.max_passage_length) for i in range(0, len(passages), chunk)]
    states, cached = [], []
    with torch.no_grad():  # pass 1: embeddings only, remembering each chunk's RNG state (dropout)
        for texts, max_length in parts:
            states.append(_rng_state(device))
            cached.append(embed_for_training(model, texts, max_length, device, settings.precision, settings.length_bucket_size, world.ddp))
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
            embeddings = embed_for_training(model, texts, max_length, device, settings.precision, settings.length_bucket_size, world.ddp)
            torch.dot(embeddings.flatten(), grad.flatten()).backward()
    _restore_rng_state(after, device)
    return loss.detach()


def base_teacher_embeddings(base, batch, settings: TrainingSettings, device: str, world: Distributed) -> tuple[torch.Tensor, torch.Tensor]:
    """distill_from base: the frozen base's embeddings of this rank's queries and every rank's
    passages, one forward pass per step (the base reads the prompts the student reads)."""
    with torch.no_grad():
        queries = embed_for_training(base, batch.queries, settings.max_query_length, device, settings.precision, settings.length_bucket_size)
        passages = embed_for_training(base, batch.passages, settings.max_passage_length, device, settings.precision,
                                      settings.length_bucket_size)
        return queries, world.all_gather(passages)


def stored_teacher_embeddings(targets: TeacherTargets, batch, device: str, world: Distributed) -> tuple[torch.Tensor, torch.Tensor]:
    """distill_from teacher: the batch's rows of the teacher's embeddings computed before the loop."""
    with torch.no_grad():
        return targets.queries(batch.rows, device), world.all_gather(targets.passages(batch.passage_texts, device))


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
    teacher_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One optimizer step on one batch (this rank's share of it): gradients (averaged over ranks by
    DistributedDataParallel during the backward pass), clipped, applied (through the fp16 gradient
    scaler when there is one, which skips a step whose gradients overflowed). The loop in
    train_encoder and the benchmarks run exactly this."""
    loss = contrastive_backward(model, queries, passages, mask, labels, settings, device, world, scaler, extra_positives, teacher_embeddings)
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


def _linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_encoder(
    base_model: str,
    data: pd.DataFrame,
    settings: TrainingSettings,
    output_dir: Path,
    work_dir: Path,
    model_card: Callable[[TrainingResult], str] | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
    teacher_targets: TeacherTargets | None = None,
) -> TrainingResult:
    """Trains and writes a sentence-transformers checkpoint (safetensors) to `output_dir`.
    `teacher_targets` (the teacher's embeddings of `data`, teacher.teacher_targets) are needed with
    distill_from: teacher.

    Under torchrun every rank calls this with the same arguments; rank 0 writes the files."""
    settings.validate()
    distilling = settings.distill_weight > 0
    if distilling and settings.distill_from == "teacher" and teacher_targets is None:
        raise ValueError("training.distill_from: teacher needs the teacher's embeddings of the training data "
                         "(set negatives.teacher to a model spec)")
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
    base_teacher = None
    if distilling and settings.distill_from == "base":  # the frozen base: its in-batch score distributions are the target
        base_teacher = load_encoder(base_model, device=device, trust_remote_code=settings.trust_remote_code).eval().requires_grad_(False)
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
    batches = query_batches(query_ids, settings.batch_size, settings.seed, settings.epochs, groups)
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

    teacher_identity = teacher_targets.metadata.get("teacher_identity") if distilling and settings.distill_from == "teacher" else None
    fingerprint = settings.fingerprint(base_model, data_fingerprint(data), teacher_identity)
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
        batch = local_batch(batches[step], world, positives, negatives, settings.query_prefix, settings.passage_prefix, queries, answers,
                            translations)
        extra = batch.extra_positives.to(device) if batch.extra_positives is not None else None
        teacher_embeddings = None
        if base_teacher is not None:
            teacher_embeddings = base_teacher_embeddings(base_teacher, batch, settings, device, world)
        elif distilling:
            teacher_embeddings = stored_teacher_embeddings(teacher_targets, batch, device, world)

        def step_once():
            return training_step(model, optimizer, batch.queries, batch.passages, batch.mask.to(device), batch.labels.to(device), settings,
                                 device, world, scaler, extra, teacher_embeddings)

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
