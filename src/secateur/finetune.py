"""Training and fine-tuning with masks held, and optional distillation from a dense teacher."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .progress import progress_bar


@dataclass
class FinetuneResult:
    """Mean training loss of each epoch."""

    losses: list[float] = field(default_factory=list)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                      temperature: float = 4.0, alpha: float = 0.7) -> torch.Tensor:
    """Hinton et al.'s loss: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y)``.

    >>> distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])).item() > 0
    True
    """
    kl = F.kl_div(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
                  log_target=True, reduction="batchmean")
    return alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(student, target)


def finetune(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    epochs: int = 3,
    *,
    teacher: nn.Module | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    temperature: float = 4.0,
    alpha: float = 0.7,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    progress: bool = True,
) -> FinetuneResult:
    """Train ``model`` in place on ``(x, y)`` batches with AdamW and a cosine learning-rate decay.

    Masked weights stay exactly zero (masks multiply the weight on every forward). With a ``teacher``,
    the loss is :func:`distillation_loss` on logits; otherwise ``loss_fn``.

    >>> net = nn.Linear(4, 2)
    >>> len(finetune(net, [(torch.randn(8, 4), torch.randint(0, 2, (8,)))], epochs=2, progress=False).losses)
    2
    """
    if epochs < 0:
        raise ValueError(f"epochs={epochs} must be >= 0")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    if teacher is not None:
        teacher.eval()
    result = FinetuneResult()
    model.train()
    for _ in progress_bar(range(epochs), "fine-tune" if teacher is None else "distil", enabled=progress):
        total, batches = 0.0, 0
        for x, y in data:
            out = model(x)
            if teacher is not None:
                loss = distillation_loss(out, _teacher_logits(teacher, x), y, temperature, alpha)
            else:
                loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, batches = total + loss.item(), batches + 1
        sched.step()
        result.losses.append(total / max(batches, 1))
    model.eval()
    return result


def _teacher_logits(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return teacher(x)
