"""Knowledge distillation: a loss that teaches a pruned network the outputs of a teacher."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["distillation_loss", "soft_target_loss"]


def distillation_loss(teacher: nn.Module, alpha: float = 0.9, temperature: float = 4.0,
                      label_smoothing: float = 0.1) -> Callable:
    """Hinton et al.'s knowledge distillation: alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * CE."""
    teacher.eval()

    def loss(out: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(x).float()
        return soft_target_loss(out, t, y, alpha, temperature, label_smoothing)

    return loss


def soft_target_loss(out: torch.Tensor, target_logits: torch.Tensor, y: torch.Tensor, alpha: float = 0.9,
                     temperature: float = 4.0, label_smoothing: float = 0.1) -> torch.Tensor:
    """alpha * T^2 * KL(out/T || target/T) + (1 - alpha) * label-smoothed CE; ``target_logits`` get no gradient."""
    t = target_logits.detach().float()
    kd = F.kl_div(F.log_softmax(out / temperature, 1), F.log_softmax(t / temperature, 1), log_target=True,
                  reduction="batchmean") * temperature ** 2
    if alpha >= 1:
        return kd
    return alpha * kd + (1 - alpha) * F.cross_entropy(out, y, label_smoothing=label_smoothing)
