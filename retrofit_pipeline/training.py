"""What a training run is: its settings (the `training` section of a preset), its result, and the
fingerprints that tie a checkpoint and a resume point to the data they were trained on.

The run itself is trainer.py: the loop, gradient caching and resume points; the losses are under
losses/, batch composition in sampler.py, the weight levers (LoRA, freezing, WiSE-FT, dropout) in
weights.py, torchrun's process group in process_group.py."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

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
    distill_weight: float = 0.0  # + w * KL(teacher || student) of each query's score distribution over the batch's passages
    # The distillation target: base (the frozen base, one forward pass per step) | teacher
    # (negatives.teacher, its embeddings of every training text computed once through its store).
    distill_from: str = "base"
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
        if self.distill_from not in ("base", "teacher"):
            raise ValueError(f"config field training.distill_from: choose base or teacher, got {self.distill_from!r}")
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

    def fingerprint(self, base_model: str, data_fingerprint: str, teacher_identity: str | None = None) -> str:
        # Settings that change how, not what, is computed do not invalidate a resume point.
        recipe = {k: v for k, v in asdict(self).items()
                  if k not in ("device", "launcher", "save_every_steps", "nnodes", "rdzv_endpoint", "rdzv_id", "k8s", "nproc_per_node")}
        if recipe["distill_from"] == "base":
            del recipe["distill_from"]  # the default: resume points made before the teacher existed stay valid
        identity = {"settings": recipe, "base": base_model, "data": data_fingerprint}
        if teacher_identity is not None:  # distilling from a teacher: its weights decide the target
            identity["teacher"] = teacher_identity
        payload = json.dumps(identity, sort_keys=True)
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
