"""Where every artifact of an experiment lives: <artifacts_dir>/<experiment>/<stage>/<partition>."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ArtifactPaths:
    root: Path

    @property
    def cache(self) -> Path:
        return self.root.parent / ".cache"

    @property
    def raw_pairs(self) -> Path:
        return self.root / "raw" / "pairs.parquet"

    @property
    def training_pool(self) -> Path:
        return self.root / "raw" / "training_pool.parquet"

    @property
    def synthetic_pairs(self) -> Path:
        return self.root / "raw" / "synthetic_pairs.parquet"

    @property
    def synthetic_cache(self) -> Path:
        """LLM replies, content-addressed; shared by every experiment of an artifacts_dir."""
        return self.root.parent / ".cache" / "llm"

    @property
    def embeddings(self) -> Path:
        """Every model's embeddings, keyed by its content (embedding_store.py): shared by the
        experiments of an artifacts_dir, so a base model is encoded once for all of them."""
        return self.root.parent / ".cache" / "embeddings"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    def mixture(self, scale: str) -> Path:
        return self.root / "mixture" / f"{scale}.parquet"

    def negatives(self, scale: str) -> Path:
        return self.root / "negatives" / f"{scale}.parquet"

    def mining_work(self, scale: str) -> Path:
        return self.root / "work" / "mining" / scale

    def checkpoint(self, scale: str) -> Path:
        return self.root / "checkpoints" / scale

    def training_work(self, scale: str) -> Path:
        return self.root / "work" / "training" / scale

    def index(self, scale: str) -> Path:
        return self.root / "index" / scale

    def scores(self, scale: str) -> Path:
        return self.root / "scores" / scale

    @property
    def base_scores(self) -> Path:
        return self.root / "scores" / "base"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def promoted(self) -> Path:
        return self.root / "promoted"
