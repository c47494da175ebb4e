"""What a fine-tuning run remembers: its counters, checkpoints (rank 0 writes; every rank reads) and the
validation score that decides the best epoch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..evaluate import accuracy
from .distributed import barrier, is_main


@dataclass
class Loop:
    """The loop's counters, saved in checkpoints (JSON)."""

    epoch: int = 0
    step: int = 0
    batch: int = 0  # micro-batches of the current epoch already trained on
    tokens: int = 0
    seconds: float = 0.0
    running: float = 0.0  # sum of step losses in the current epoch
    running_steps: int = 0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    losses: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_perplexity: list[float] = field(default_factory=list)
    last_val: dict[str, float] = field(default_factory=dict)
    rng: list[int] | None = None


def save(run: Any) -> None:
    """Checkpoint the run (rank 0 writes, the others wait for it)."""
    if is_main():
        run.loop.rng = torch.get_rng_state().tolist()
        save_checkpoint(run.opts.checkpoint_dir, run.holder, run.opt, run.sched, vars(run.loop), run.best_state)
    barrier()


def restore(run: Any) -> bool:
    """Continue from the run's checkpoint folder; False when it holds none."""
    saved = load_checkpoint(run.opts.checkpoint_dir, run.holder, run.opt, run.sched, loop_type=Loop,
                            epochs=run.opts.epochs)
    if saved is None:
        return False
    run.loop, run.best_state = Loop(**saved[0]), saved[1]
    if run.loop.rng is not None:
        torch.set_rng_state(torch.tensor(run.loop.rng, dtype=torch.uint8))
    return True


def validate(run: Any, epoch: int) -> bool:
    """Score the model on ``val_data`` (accuracy of ``(x, y)``, or perplexity of token windows); True
    when this epoch is the best so far."""
    loop, val = run.loop, run.opts.val_data
    if isinstance(val, torch.Tensor):
        from ..llm.corpus import perplexity

        value = perplexity(run.model, val.to(run.device), progress=False)
        loop.val_perplexity.append(value)
        loop.last_val, score = {"finetune/val_perplexity": value}, -value
    else:
        value = accuracy(run.model, val[0].to(run.device), val[1].to(run.device))
        loop.val_accuracy.append(value)
        loop.last_val, score = {"finetune/val_accuracy": value}, value
    if loop.best is None or score > loop.best:
        loop.best, loop.best_epoch, loop.bad_epochs = score, epoch, 0
        return True
    loop.bad_epochs += 1
    return False
