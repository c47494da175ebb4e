"""Training and fine-tuning with masks held, distillation from a dense teacher, gradual pruning,
early stopping on a validation split, and checkpoints a later run resumes from."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import accuracy
from .progress import progress_bar
from .schedule import GradualPruning


@dataclass
class FinetuneResult:
    """Mean training loss and validation accuracy of each epoch; where training stopped and why."""

    losses: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    resumed_from: int | None = None


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                      temperature: float = 4.0, alpha: float = 0.7) -> torch.Tensor:
    """Hinton et al.'s loss: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y)``.

    >>> distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])).item() > 0
    True
    """
    kl = F.kl_div(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
                  log_target=True, reduction="batchmean")
    return alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(student, target)


def _teacher_logits(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return teacher(x)


@dataclass
class _Loop:
    """The loop's counters, saved in checkpoints."""

    epoch: int = 0
    step: int = 0
    best: float = -1.0
    best_epoch: int | None = None
    bad_epochs: int = 0
    losses: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)


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
    pruning: GradualPruning | None = None,
    val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    patience: int | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Train ``model`` in place on ``(x, y)`` batches with AdamW and a cosine learning-rate decay.

    Masked weights stay exactly zero (masks multiply the weight on every forward). ``teacher`` adds
    :func:`distillation_loss`; ``pruning`` raises sparsity along its schedule after every step;
    ``val_data`` ``(x, y)`` is scored each epoch and the best epoch's weights are kept (training stops
    after ``patience`` epochs without improvement); ``checkpoint_dir`` gets a checkpoint each epoch and
    a later call with the same folder continues after the last completed epoch.

    >>> net = nn.Linear(4, 2)
    >>> len(finetune(net, [(torch.randn(8, 4), torch.randint(0, 2, (8,)))], epochs=2, progress=False).losses)
    2
    """
    if epochs < 0:
        raise ValueError(f"epochs={epochs} must be >= 0")
    if patience is not None and val_data is None:
        raise ValueError("patience= needs val_data=(x, y) to decide when to stop")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    loop, result, best_state = _Loop(), FinetuneResult(), None
    if checkpoint_dir is not None and resume:
        saved = load_checkpoint(checkpoint_dir, model, opt, sched, loop_type=_Loop, epochs=epochs)
        if saved is not None:
            loop, best_state = _Loop(**saved[0]), saved[1]
            result.resumed_from = loop.epoch
    if teacher is not None:
        teacher.eval()
    if pruning is not None and loop.step == 0:
        pruning.step(model, 0)  # a schedule may start before the first update
    for epoch in progress_bar(range(loop.epoch, epochs), "distil" if teacher else "fine-tune", enabled=progress):
        model.train()
        total, batches = 0.0, 0
        for x, y in data:
            out = model(x)
            loss = (distillation_loss(out, _teacher_logits(teacher, x), y, temperature, alpha)
                    if teacher is not None else loss_fn(out, y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loop.step += 1
            if pruning is not None:
                pruning.step(model, loop.step)
            total, batches = total + loss.item(), batches + 1
        sched.step()
        loop.epoch = epoch + 1
        loop.losses.append(total / max(batches, 1))
        if val_data is not None:
            score = accuracy(model, *val_data)
            loop.val_accuracy.append(score)
            if score > loop.best:
                loop.best, loop.best_epoch, loop.bad_epochs = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                loop.bad_epochs += 1
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, model, opt, sched, vars(loop), best_state)
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
        if patience is not None and loop.bad_epochs >= patience:
            result.stopped_early = True
            break
    if best_state is not None and loop.best_epoch is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.losses, result.val_accuracy, result.best_epoch = loop.losses, loop.val_accuracy, loop.best_epoch
    return result
