"""InfoNCE over in-batch and mined hard negatives, with false negatives masked.

For each query the candidates are every positive in the batch plus every hard negative in the
batch; the loss is cross-entropy with temperature over cosine similarities. A candidate that is a
correct answer of the query (another positive of the same query_id, or a passage with the text of
one) is masked out instead of being punished as a negative; translations of the positive can join
as further positives (multi-positive InfoNCE)."""

from __future__ import annotations

import torch


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
