"""FAISS indexes over normalized embeddings (inner product = cosine).

Exact flat search by default; any faiss index_factory string (e.g. "IVF256,Flat", "HNSW32",
"IVF1024,PQ32") by configuration. A GPU is used when faiss was built with GPU support and sees one."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from .artifact_io import atomic_directory


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _to_gpu(index: faiss.Index) -> faiss.Index:
    resources = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(resources, 0, index)


def build_flat_index(embeddings: np.ndarray, use_gpu: bool = False) -> faiss.Index:
    index = faiss.IndexFlatIP(embeddings.shape[1])
    if use_gpu and gpu_available():
        index = _to_gpu(index)
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def build_index(embeddings: np.ndarray, factory: str = "Flat", use_gpu: bool = False, nprobe: int = 16) -> faiss.Index:
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = faiss.index_factory(embeddings.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if use_gpu and gpu_available() and not factory.startswith("HNSW"):
        index = _to_gpu(index)
    if not index.is_trained:
        index.train(embeddings)
    index.add(embeddings)
    if hasattr(index, "nprobe"):
        index.nprobe = nprobe
    return index


def save_index(index: faiss.Index, doc_ids: list[str], subsets: list[str], directory: Path, info: dict) -> Path:
    """index.faiss + doc_ids.json (row -> document id and its evaluation subset, domain.language)
    + info.json, written atomically."""
    if type(index).__name__.startswith("Gpu"):
        index = faiss.index_gpu_to_cpu(index)
    with atomic_directory(directory) as tmp:
        faiss.write_index(index, str(tmp / "index.faiss"))
        (tmp / "doc_ids.json").write_text(json.dumps({"doc_ids": doc_ids, "subsets": subsets}, ensure_ascii=False))
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
    return Path(directory)


def load_index(directory: Path) -> tuple[faiss.Index, list[str], list[str]]:
    directory = Path(directory)
    index = faiss.read_index(str(directory / "index.faiss"))
    ids = json.loads((directory / "doc_ids.json").read_text())
    return index, ids["doc_ids"], ids["subsets"]


def recall_against_exact(index: faiss.Index, embeddings: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """Share of the exact top-k that an approximate index also returns (1.0 for flat)."""
    exact = build_flat_index(embeddings)
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k)
    hits = sum(len(set(t) & set(f)) for t, f in zip(truth, found))
    return hits / truth.size
