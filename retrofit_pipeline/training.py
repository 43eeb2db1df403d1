"""Contrastive fine-tuning of a bi-encoder: InfoNCE over in-batch and mined hard negatives.

For each query the candidates are every positive in the batch plus every hard negative in the
batch; the loss is cross-entropy with temperature over cosine similarities. A candidate whose text
equals the query's own positive (the same English line paired with several languages, say) is
masked out instead of being punished as a negative.

Resumable: every `save_every_steps` the weights, optimizer, scheduler and RNG states are written
(atomically) to `work_dir/resume`; a rerun with the same settings continues from there and ends
where an uninterrupted run would."""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .artifact_io import atomic_directory
from .encoder import autocast_for, embed_batch, load_encoder, resolve_device, tokenize


@dataclass
class TrainingSettings:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    temperature: float = 0.05
    max_query_length: int = 64
    max_passage_length: int = 128
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    precision: str = "bf16"  # used on CUDA only
    gradient_checkpointing: str = "auto"  # auto = on when training on a GPU
    device: str = "auto"
    max_steps: int | None = None
    save_every_steps: int = 50
    seed: int = 13
    trust_remote_code: bool = False

    def fingerprint(self, base_model: str, data_fingerprint: str) -> str:
        payload = json.dumps({"settings": asdict(self), "base": base_model, "data": data_fingerprint}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class TrainingResult:
    steps: int
    resumed_from_step: int
    losses: list[float]
    seconds: float
    samples_per_second: float
    device: str

    def summary(self) -> dict:
        head = float(np.mean(self.losses[: max(1, len(self.losses) // 10)])) if self.losses else None
        tail = float(np.mean(self.losses[-max(1, len(self.losses) // 10):])) if self.losses else None
        return {
            "steps": self.steps, "resumed_from_step": self.resumed_from_step,
            "first_loss": head, "last_loss": tail, "seconds": round(self.seconds, 1),
            "samples_per_second": round(self.samples_per_second, 2), "device": self.device,
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


def info_nce_loss(
    query_embeddings: torch.Tensor,
    passage_embeddings: torch.Tensor,
    temperature: float,
    false_negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Row i's positive is passage i; every other passage is a negative unless masked."""
    scores = query_embeddings @ passage_embeddings.T / temperature
    if false_negative_mask is not None:
        scores = scores.masked_fill(false_negative_mask, torch.finfo(scores.dtype).min)
    labels = torch.arange(query_embeddings.shape[0], device=scores.device)
    return torch.nn.functional.cross_entropy(scores, labels)


def _duplicate_positive_mask(positives: list[str], passages: list[str]) -> torch.Tensor:
    """True where passage j (j != i) has exactly the text of query i's positive."""
    ids: dict[str, int] = {}
    positive_ids = torch.tensor([ids.setdefault(t, len(ids)) for t in positives])
    passage_ids = torch.tensor([ids.setdefault(t, len(ids)) for t in passages])
    mask = positive_ids[:, None] == passage_ids[None, :]
    mask[torch.arange(len(positives)), torch.arange(len(positives))] = False
    return mask


def _linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _batches(n: int, batch_size: int, seed: int, epochs: int) -> list[np.ndarray]:
    """The whole run's batch order, fixed by the seed: a resumed run sees the same batches."""
    batches = []
    for epoch in range(epochs):
        order = np.random.default_rng(seed + epoch).permutation(n)
        batches.extend(order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size))
    return batches


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
) -> TrainingResult:
    """Trains and writes a sentence-transformers checkpoint (safetensors) to `output_dir`."""
    if len(data) < settings.batch_size:
        raise ValueError(f"training data has {len(data)} rows, fewer than one batch ({settings.batch_size})")
    _set_seed(settings.seed)
    device = resolve_device(settings.device)
    model = load_encoder(
        base_model, device=device, max_length=settings.max_passage_length, trust_remote_code=settings.trust_remote_code,
        query_prefix=settings.query_prefix, passage_prefix=settings.passage_prefix,
    )
    if settings.gradient_checkpointing == "on" or (settings.gradient_checkpointing == "auto" and device.startswith("cuda")):
        model[0].auto_model.gradient_checkpointing_enable()
    batches = _batches(len(data), settings.batch_size, settings.seed, settings.epochs)
    total_steps = len(batches) if settings.max_steps is None else min(len(batches), settings.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = _linear_schedule(optimizer, int(total_steps * settings.warmup_ratio), total_steps)

    fingerprint = settings.fingerprint(base_model, data_fingerprint(data))
    resume_dir = Path(work_dir) / "resume"
    start_step, losses = 0, []
    state_file = resume_dir / "trainer_state.pt"
    if state_file.exists():
        state = torch.load(state_file, weights_only=True)
        if state["fingerprint"] == fingerprint:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(resume_dir / "model.safetensors", device=device))
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            start_step, losses = int(state["step"]), list(state["losses"])

    def save_resume_point(step: int) -> None:
        from safetensors.torch import save_file

        with atomic_directory(resume_dir) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
            torch.save({
                "fingerprint": fingerprint, "step": step, "losses": losses,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            }, tmp / "trainer_state.pt")

    queries = data["query"].tolist()
    positives = data["positive"].tolist()
    negatives = data["negatives"].tolist() if "negatives" in data else [[] for _ in queries]
    model.train()
    started = time.perf_counter()
    samples = 0
    progress = tqdm(range(start_step, total_steps), desc="train", initial=start_step, total=total_steps, leave=False)
    for step in progress:
        index = batches[step]
        batch_positives = [positives[i] for i in index]
        batch_passages = batch_positives + [n for i in index for n in negatives[i]]
        with autocast_for(device, settings.precision):
            q = embed_batch(model, tokenize(model, [settings.query_prefix + queries[i] for i in index], settings.max_query_length))
            p = embed_batch(model, tokenize(model, [settings.passage_prefix + t for t in batch_passages], settings.max_passage_length))
        mask = _duplicate_positive_mask(batch_positives, batch_passages).to(q.device)
        loss = info_nce_loss(q, p, settings.temperature, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        samples += len(index)
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
        done = step + 1
        if on_progress is not None:
            on_progress(done, total_steps, losses[-1])
        if done % settings.save_every_steps == 0 and done < total_steps:
            save_resume_point(done)
    seconds = time.perf_counter() - started
    result = TrainingResult(
        steps=total_steps, resumed_from_step=start_step, losses=losses, seconds=seconds,
        samples_per_second=samples / seconds if seconds > 0 else 0.0, device=device,
    )
    model.eval()
    with atomic_directory(Path(output_dir)) as tmp:
        model.save(str(tmp), safe_serialization=True)
        (tmp / "training_log.json").write_text(json.dumps({"losses": losses, **result.summary()}, indent=2))
        if model_card is not None:
            (tmp / "README.md").write_text(model_card(result), encoding="utf-8")
    # The finished checkpoint supersedes the resume point.
    if resume_dir.exists():
        import shutil

        shutil.rmtree(resume_dir)
    return result
