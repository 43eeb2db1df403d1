"""The training losses, one per module (sentence-transformers' layout)."""

from .distillation import distillation_loss
from .info_nce import false_negative_mask, info_nce_loss

__all__ = ["distillation_loss", "false_negative_mask", "info_nce_loss"]
