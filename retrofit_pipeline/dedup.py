"""Exact and near-duplicate detection for text: normalized keys and MinHash with LSH banding.

Character n-gram shingles work for every script (no tokenizer needed for Chinese or Japanese)."""

from __future__ import annotations

import re
import unicodedata
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


_BAND_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier (the golden ratio in 64 bits): mixes a band's values into one key
_PAIRS_PER_BLOCK = 500_000  # candidate pairs held at once (two signature copies each, ~0.5 GB): bounds memory when many rows share a band


def _band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """(rows, bands) uint64: one key per LSH band of each signature. Equal bands give equal keys;
    different bands may collide, so a candidate pair is confirmed on the band's values."""
    rows_per_band = signatures.shape[1] // bands
    keys = np.zeros((len(signatures), bands), dtype=np.uint64)
    for band in range(bands):
        for column in range(band * rows_per_band, (band + 1) * rows_per_band):
            keys[:, band] = (keys[:, band] ^ signatures[:, column]) * _BAND_MIX
    return keys


def _candidate_pairs(left: np.ndarray, right: np.ndarray, bands: int):
    """Blocks of (left rows, right rows) that share at least one LSH band exactly (each pair once
    per block), with the fraction of their signature values that agree."""
    rows_per_band = left.shape[1] // bands
    left_keys, right_keys = _band_keys(left, bands), _band_keys(right, bands)
    for band in range(bands):
        order = np.argsort(right_keys[:, band], kind="stable")
        sorted_keys = right_keys[order, band]
        low = np.searchsorted(sorted_keys, left_keys[:, band], side="left")
        counts = np.searchsorted(sorted_keys, left_keys[:, band], side="right") - low
        ends = np.cumsum(counts)
        first = 0
        while first < len(left):  # blocks of whole left rows, about _PAIRS_PER_BLOCK pairs each
            done = ends[first - 1] if first else 0
            stop = max(first + 1, int(np.searchsorted(ends, done + _PAIRS_PER_BLOCK, side="right")))
            block_counts = counts[first:stop]
            left_rows = np.repeat(np.arange(first, stop), block_counts)
            offsets = np.arange(int(block_counts.sum())) - np.repeat(np.cumsum(block_counts) - block_counts, block_counts)
            right_rows = order[np.repeat(low[first:stop], block_counts) + offsets]
            columns = slice(band * rows_per_band, (band + 1) * rows_per_band)
            same_band = (left[left_rows, columns] == right[right_rows, columns]).all(axis=1)
            left_rows, right_rows = left_rows[same_band], right_rows[same_band]
            yield left_rows, right_rows, (left[left_rows] == right[right_rows]).mean(axis=1)
            first = stop


def near_duplicate_groups(signatures: np.ndarray, threshold: float, bands: int = 16) -> list[int]:
    """For each row, the index of the first earlier row that is its own group's representative and
    whose estimated Jaccard similarity is at least `threshold` (itself if none). Candidates are rows
    sharing an LSH band; every candidate is verified on the whole signature. The pairs are found
    and verified with numpy; only the verified ones are walked in row order."""
    verified: set[tuple[int, int]] = set()
    for rows, earlier, similarity in _candidate_pairs(signatures, signatures, bands):
        keep = (earlier < rows) & (similarity >= threshold)
        verified.update(zip(rows[keep].tolist(), earlier[keep].tolist()))
    representative = list(range(len(signatures)))
    for row, earlier in sorted(verified):  # by row, then by earlier row: the first representative wins
        if representative[row] == row and representative[earlier] == earlier:
            representative[row] = earlier
    return representative


def matches_any(query_signatures: np.ndarray, reference_signatures: np.ndarray, threshold: float, bands: int = 16) -> np.ndarray:
    """Boolean mask: which query rows are near-duplicates of at least one reference row (sharing an
    LSH band, and verified on the whole signature)."""
    mask = np.zeros(len(query_signatures), dtype=bool)
    if len(query_signatures) and len(reference_signatures):
        for rows, _, similarity in _candidate_pairs(query_signatures, reference_signatures, bands):
            mask[rows[similarity >= threshold]] = True
    return mask
