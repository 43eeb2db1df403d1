"""Exact and near-duplicate detection for text: normalized keys and MinHash with LSH banding.

Character n-gram shingles work for every script (no tokenizer needed for Chinese or Japanese)."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict

import numpy as np

_PUNCTUATION_RE = re.compile(r"[\W_]+", re.UNICODE)
_MAX_UINT64 = np.iinfo(np.uint64).max


def normalize_text(text: str) -> str:
    """Case, width, accents-as-composed, punctuation and spacing differences are not differences."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCTUATION_RE.sub(" ", text).strip()


class MinHasher:
    """MinHash signatures over character n-gram shingles, vectorized with numpy over many texts at
    once: code points -> rolling n-gram hashes -> num_perm universal hashes -> per-text minimum."""

    _SHINGLES_PER_BLOCK = 32_768
    _TEXTS_PER_CHUNK = 20_000  # bounds memory: one block holds shingles x num_perm uint64 values

    def __init__(self, num_perm: int = 64, shingle_size: int = 5, seed: int = 13):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _MAX_UINT64, size=num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
        self.b = rng.integers(0, _MAX_UINT64, size=num_perm, dtype=np.uint64, endpoint=True)
        self.num_perm = num_perm
        self.shingle_size = shingle_size

    def _shingle_hashes(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts' n-gram hashes, concatenated, and the number of shingles of each text. A text
        shorter than n is padded with zeros to one shingle. Duplicate shingles within a text need
        no removal: they cannot change a minimum."""
        n = self.shingle_size
        normalized = [normalize_text(t).replace(" ", "") for t in texts]
        padded = [t + "\0" * (n - len(t)) if len(t) < n else t for t in normalized]
        codepoints = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        hashes = np.zeros(max(0, len(codepoints) - n + 1), dtype=np.uint64)
        for k in range(n):  # polynomial hash of each n-gram (uint64 arithmetic wraps, as intended)
            hashes = hashes * np.uint64(1_000_003) + codepoints[k : len(codepoints) - n + 1 + k]
        lengths = np.array([len(t) for t in padded], dtype=np.int64)
        counts = lengths - n + 1
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        # Start offsets of every n-gram that lies inside one text.
        positions = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        return hashes[positions], counts

    def signatures(self, texts: list[str]) -> np.ndarray:
        """One signature row per text. Texts are processed _TEXTS_PER_CHUNK at a time, so memory is
        bounded by the chunk (its code points and shingles), not by the number of texts."""
        result = np.empty((len(texts), self.num_perm), dtype=np.uint64)
        for start in range(0, len(texts), self._TEXTS_PER_CHUNK):
            result[start : start + self._TEXTS_PER_CHUNK] = self._chunk_signatures(texts[start : start + self._TEXTS_PER_CHUNK])
        return result

    def _chunk_signatures(self, texts: list[str]) -> np.ndarray:
        shingles, counts = self._shingle_hashes(texts)
        result = np.empty((len(texts), self.num_perm), dtype=np.uint64)
        ends = np.cumsum(counts)
        text_start = 0
        while text_start < len(texts):  # blocks of whole texts, about _SHINGLES_PER_BLOCK shingles each
            first = 0 if text_start == 0 else ends[text_start - 1]
            text_stop = max(text_start + 1, int(np.searchsorted(ends, first + self._SHINGLES_PER_BLOCK, side="right")))
            block = shingles[first : ends[text_stop - 1]]
            # a*x + b modulo 2**64 (uint64 wraps) with odd a: a multiply-add hash family whose high
            # bits, which decide the minimum, are well mixed; no modulo, which costs 10x the multiply.
            hashed = self.a[:, None] * block[None, :] + self.b[:, None]  # (num_perm, shingles): reduced along rows
            offsets = np.concatenate([[0], np.cumsum(counts[text_start:text_stop])[:-1]])
            result[text_start:text_stop] = np.minimum.reduceat(hashed, offsets, axis=1).T
            text_start = text_stop
        return result

    def signature(self, text: str) -> np.ndarray:
        return self.signatures([text])[0]


def near_duplicate_groups(signatures: np.ndarray, threshold: float, bands: int = 16) -> list[int]:
    """For each row, the index of the first earlier row whose estimated Jaccard similarity is at
    least `threshold` (itself if none). Candidates come from LSH buckets; each is verified."""
    rows_per_band = signatures.shape[1] // bands
    buckets: dict[tuple, list[int]] = defaultdict(list)
    representative = list(range(len(signatures)))
    for i, sig in enumerate(signatures):
        candidates: set[int] = set()
        for band in range(bands):
            key = (band, sig[band * rows_per_band : (band + 1) * rows_per_band].tobytes())
            candidates.update(buckets[key])
            buckets[key].append(i)
        for j in sorted(candidates):
            if representative[j] == j and np.mean(signatures[j] == sig) >= threshold:
                representative[i] = j
                break
    return representative


def matches_any(query_signatures: np.ndarray, reference_signatures: np.ndarray, threshold: float, bands: int = 16) -> np.ndarray:
    """Boolean mask: which query rows are near-duplicates of at least one reference row."""
    rows_per_band = query_signatures.shape[1] // bands if len(query_signatures) else 1
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for j, sig in enumerate(reference_signatures):
        for band in range(bands):
            buckets[(band, sig[band * rows_per_band : (band + 1) * rows_per_band].tobytes())].append(j)
    mask = np.zeros(len(query_signatures), dtype=bool)
    for i, sig in enumerate(query_signatures):
        candidates: set[int] = set()
        for band in range(bands):
            candidates.update(buckets.get((band, sig[band * rows_per_band : (band + 1) * rows_per_band].tobytes()), ()))
        mask[i] = any(np.mean(reference_signatures[j] == sig) >= threshold for j in candidates)
    return mask
