"""Distillation: KL between a teacher's and the student's score distributions over each batch."""

from __future__ import annotations

import torch


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
