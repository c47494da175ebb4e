"""The fine-tuning loop: masks held, distillation, gradient accumulation, gradual pruning, early
stopping, checkpoints a later run resumes from bit for bit, metrics to trackers, and data-parallel
training when launched with ``torchrun`` or ``accelerate launch``."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from ..loss import ForwardLoss, LossFn, batch_loss, loss_items, task_loss
from ..progress import status_bar
from ..schedule import GradualPruning
from ..tracking import Tracker, as_tracker
from .data import batch_tokens, epoch_batches, to_device
from .distill import Distiller
from .distributed import accumulating, average_gradients, data_parallel, is_main
from .state import Loop, restore, save, validate


@dataclass
class FinetuneResult:
    """Mean training loss and validation score of each epoch; where training stopped and why; how much
    it trained (optimizer steps, tokens seen by this process, seconds)."""

    losses: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_perplexity: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    resumed_from: int | None = None
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0


@dataclass
class Options:
    """Everything :func:`finetune` was asked, checked once."""

    epochs: int | None
    steps: int | None
    lr: float
    weight_decay: float
    loss_fn: LossFn | ForwardLoss
    accumulate: int
    max_grad_norm: float | None
    batch_size: int
    seed: int
    pruning: GradualPruning | None
    val_data: Any
    patience: int | None
    checkpoint_dir: Path | None
    checkpoint_every: int | None
    resume: bool
    on_epoch_end: Callable[[int, nn.Module], None] | None
    tracker: Tracker
    progress: bool
    optimizer: Callable[[list], torch.optim.Optimizer] | None = None
    minutes: float | None = None

    def check(self) -> None:
        for name in ("epochs", "steps", "checkpoint_every", "patience"):
            value = getattr(self, name)
            if value is not None and value < (0 if name in ("epochs", "patience") else 1):
                raise InvalidParameterError(f"{name}={value} must be {'>= 0' if name != 'steps' else '>= 1'}")
        if self.accumulate < 1 or self.batch_size < 1:
            raise InvalidParameterError(f"accumulate={self.accumulate} and batch_size={self.batch_size} must be >= 1")
        if self.minutes is not None and self.minutes <= 0:
            raise InvalidParameterError(f"minutes={self.minutes} must be > 0")
        if self.patience is not None and self.val_data is None:
            raise InvalidParameterError("patience= needs val_data= to decide when to stop")


class Run:
    """One fine-tuning run over ``data`` (see :func:`finetune`)."""

    def __init__(self, model: nn.Module, data: Any, opts: Options, distiller: Distiller | None) -> None:
        self.model, self.data, self.opts, self.distiller = model, data, opts, distiller
        self.train_model = data_parallel(model)
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        if distiller is not None and distiller.hidden:
            self._warm_projections()
        params = [p for p in model.parameters() if p.requires_grad]
        params += list(distiller.projections.parameters()) if distiller is not None else []
        self.opt = (opts.optimizer(params) if opts.optimizer is not None
                    else torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(opts.steps or opts.epochs or 1, 1))
        self.holder = nn.ModuleDict({"student": model, "projections": distiller.projections}) if (
            distiller is not None and len(distiller.projections)) else model
        self.loop, self.best_state, self.result = Loop(), None, FinetuneResult()

    def _warm_projections(self) -> None:
        """Create hidden-state projections on one batch before the optimizer is made (so resume finds them)."""
        first = to_device(next(iter(epoch_batches(self.data, 0, self.opts))), self.device)
        with torch.no_grad():
            out = self.distiller.student_inputs(first.inputs).call(self.model)
            self.distiller.loss(out, first, self.opts.loss_fn)

    def loss(self, batch) -> torch.Tensor:
        if isinstance(self.opts.loss_fn, ForwardLoss):
            return batch_loss(self.train_model, batch, self.opts.loss_fn)[0]
        if self.distiller is None:
            return task_loss(batch.inputs.call(self.train_model), batch, self.opts.loss_fn)
        out = self.distiller.student_inputs(batch.inputs).call(self.train_model)
        return self.distiller.loss(out, batch, self.opts.loss_fn)

    def update(self, window: list) -> float:
        """One optimizer step over the micro-batches of ``window``, each weighted by its share of the items."""
        weights = [loss_items(b) for b in window]
        total_items = max(sum(weights), 1)
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        for i, batch in enumerate(window):
            batch = to_device(batch, self.device)
            with accumulating(self.train_model, last=i == len(window) - 1):
                loss = self.loss(batch) * (weights[i] / total_items)
                loss.backward()
            total += float(loss.detach())
            self.loop.tokens += batch_tokens(batch)
        if self.distiller is not None:
            average_gradients(self.distiller.projections.parameters())
        if self.opts.max_grad_norm is not None:
            nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], self.opts.max_grad_norm)
        self.opt.step()
        self.loop.step += 1
        if self.opts.steps is not None:
            self.sched.step()
        if self.opts.pruning is not None:
            self.opts.pruning.step(self.model, self.loop.step)
        return total

    def done(self) -> bool:
        """The step budget is spent, or the time budget (checked after each optimizer step)."""
        out_of_time = self.opts.minutes is not None and self.loop.seconds >= 60 * self.opts.minutes
        return out_of_time or (self.opts.steps is not None and self.loop.step >= self.opts.steps)

    def epoch(self, epoch: int, advance: Callable[[str], None]) -> bool:
        """Train one epoch (from where a resumed run stopped in it); False when a budget ended it early."""
        self.model.train()
        window: list = []
        start = time.perf_counter() - self.loop.seconds
        for index, batch in enumerate(epoch_batches(self.data, epoch, self.opts)):
            if index < self.loop.batch:
                continue  # consumed before the checkpoint this run resumed from
            window.append(batch)
            if len(window) < self.opts.accumulate:
                continue
            self._step(window, index + 1, start, advance)
            window = []
            if self.done():
                return False
        if window:
            self._step(window, self.loop.batch + len(window), start, advance)
        return True

    def _step(self, window: list, consumed: int, start: float, advance: Callable[[str], None]) -> None:
        loss = self.update(window)
        loop = self.loop
        loop.batch, loop.seconds = consumed, time.perf_counter() - start
        loop.running, loop.running_steps = loop.running + loss, loop.running_steps + 1
        rate = loop.tokens / max(loop.seconds, 1e-9)
        metrics = {"finetune/loss": loss, "finetune/lr": self.opt.param_groups[0]["lr"]}
        if loop.tokens:
            metrics["finetune/tokens_per_s"] = rate
        if is_main():
            self.opts.tracker.log(metrics, loop.step)
        advance(f"loss {loss:.4f}" + (f" · {rate:,.0f} tok/s" if loop.tokens else ""))
        if self.opts.checkpoint_every and loop.step % self.opts.checkpoint_every == 0:
            save(self)

    def end_epoch(self, epoch: int) -> bool:
        """Record the epoch, validate, checkpoint; True when early stopping says stop."""
        loop = self.loop
        if self.opts.steps is None:
            self.sched.step()
        loop.epoch, loop.batch = epoch + 1, 0
        loop.losses.append(loop.running / max(loop.running_steps, 1))
        loop.running = loop.running_steps = 0
        if self.opts.val_data is not None and validate(self, epoch):
            self.best_state = copy.deepcopy(self.model.state_dict())
        if self.opts.tracker.members and is_main():
            self.opts.tracker.log({"finetune/epoch_loss": loop.losses[-1], **loop.last_val}, loop.step)
        if self.opts.checkpoint_dir is not None:
            save(self)
        if self.opts.on_epoch_end is not None:
            self.opts.on_epoch_end(epoch, self.model)
        return self.opts.patience is not None and loop.bad_epochs >= self.opts.patience

    def run(self) -> FinetuneResult:
        if self.opts.checkpoint_dir is not None and self.opts.resume and restore(self):
            self.result.resumed_from = self.loop.epoch
        if self.opts.pruning is not None and self.loop.step == 0:
            self.opts.pruning.step(self.model, 0)  # a schedule may start before the first update
        epochs = self.opts.epochs if self.opts.epochs is not None else math.inf
        with status_bar("distil" if self.distiller else "fine-tune", self.opts.steps or _total(self),
                        self.opts.progress and is_main()) as advance:
            epoch = self.loop.epoch
            while epoch < epochs and not self.done():
                if not self.epoch(epoch, advance):
                    break  # the budget ended inside the epoch: it is not complete
                if self.end_epoch(epoch):
                    self.result.stopped_early = True
                    break
                epoch += 1
        return self.finish()

    def finish(self) -> FinetuneResult:
        if self.done() and self.loop.batch and self.opts.checkpoint_dir is not None:
            save(self)  # a step budget that ends inside an epoch
        if self.best_state is not None and self.loop.best_epoch is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()
        r, loop = self.result, self.loop
        partial = [loop.running / loop.running_steps] if loop.running_steps else []  # an epoch cut short
        r.losses, r.val_accuracy, r.val_perplexity, r.best_epoch = (loop.losses + partial, loop.val_accuracy,
                                                                     loop.val_perplexity, loop.best_epoch)
        r.steps, r.tokens, r.seconds = loop.step, loop.tokens, loop.seconds
        return r


def _total(run: Run) -> int | None:
    """Optimizer steps of the whole run, when the data has a length."""
    try:
        per_epoch = math.ceil(len(run.data) / run.opts.accumulate) if not isinstance(run.data, torch.Tensor) else (
            math.ceil(math.ceil(len(run.data) / run.opts.batch_size) / run.opts.accumulate))
    except TypeError:
        return None
    return per_epoch * (run.opts.epochs or 0) or None


def finetune(
    model: nn.Module,
    data: Iterable | torch.Tensor,
    epochs: int | None = None,
    *,
    steps: int | None = None,
    teacher: nn.Module | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    temperature: float = 4.0,
    alpha: float = 0.7,
    hidden_weight: float = 0.0,
    loss_fn: LossFn | ForwardLoss = F.cross_entropy,
    accumulate: int = 1,
    max_grad_norm: float | None = None,
    batch_size: int = 8,
    seed: int = 0,
    pruning: GradualPruning | None = None,
    val_data: Any = None,
    patience: int | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    log: Tracker | Callable | list | None = None,
    optimizer: Callable[[list], torch.optim.Optimizer] | None = None,
    minutes: float | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Train ``model`` in place with AdamW and a cosine learning-rate decay; masked weights stay exactly zero.

    ``data`` is any iterable of batches (a ``DataLoader``, a list): ``(inputs, targets)`` scored with
    ``loss_fn``, Hugging Face dicts (with ``labels``: the model's own loss; token ids alone: the next-token
    loss), or anything a :class:`~secateur.ForwardLoss` understands. A ``(windows, length)`` integer
    tensor of token windows is shuffled each epoch (``seed``) into batches of ``batch_size`` rows. Batches
    move to the model's device. ``epochs`` (default 3, or unlimited when ``steps`` is given) and ``steps``
    (optimizer steps; the cosine decay then runs per step) bound the run, and ``minutes`` of training time.

    ``teacher`` adds distillation (:class:`~secateur.training.distill.Distiller`): ``alpha * T^2 * KL`` of
    the logits at ``temperature`` (per token for language models) ``+ (1 - alpha) *`` the task loss
    ``+ hidden_weight *`` hidden-state matching. ``accumulate`` micro-batches make one optimizer step (each
    weighted by its share of the items, so k micro-batches equal one batch of them). ``pruning`` raises
    sparsity along its schedule after every step; ``val_data`` (``(x, y)`` for accuracy, token windows
    for perplexity) is scored each epoch and the best epoch's weights are kept, stopping after
    ``patience`` epochs without improvement. ``checkpoint_dir`` gets a checkpoint each epoch and every
    ``checkpoint_every`` steps; a later call with the same folder continues where it stopped, bit for bit.
    ``optimizer`` makes the optimizer from the parameters (default AdamW with ``lr``, ``weight_decay``).
    ``log`` takes trackers (e.g. :class:`secateur.TensorBoard`) or functions ``fn(metrics, step)``.
    Under ``torchrun`` the model trains data-parallel (DDP); rank 0 writes checkpoints and logs.

    >>> net = nn.Linear(4, 2)
    >>> len(finetune(net, [(torch.randn(8, 4), torch.randint(0, 2, (8,)))], epochs=2, progress=False).losses)
    2
    """
    opts = Options(3 if epochs is None and steps is None else epochs, steps, lr, weight_decay, loss_fn, accumulate,
                   max_grad_norm, batch_size, seed, pruning, val_data, patience,
                   Path(checkpoint_dir) if checkpoint_dir is not None else None, checkpoint_every, resume,
                   on_epoch_end, as_tracker(log), progress, optimizer, minutes)
    opts.check()
    if teacher is not None and isinstance(loss_fn, ForwardLoss):
        raise InvalidParameterError("distillation needs the student's logits; a ForwardLoss returns only a loss: "
                                    "pass loss_fn as prediction -> loss, or distil inside your ForwardLoss")
    distiller = Distiller(teacher, temperature, alpha, hidden_weight) if teacher is not None else None
    return Run(model, data, opts, distiller).run()
