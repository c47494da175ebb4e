"""Hugging Face ``Trainer`` integration: a callback that runs a gradual pruning schedule and reports the
sparsity, and a ``Trainer`` subclass that distils from the dense model. Masks need nothing: they are
parametrizations, so ``Trainer``'s optimizer (under DDP, FSDP or DeepSpeed through accelerate too) updates
the stored values and the pruned weights stay exactly zero.

Example (``tests/test_distributed.py`` runs it under torchrun)::

    trainer = sc.DistillationTrainer(model=student, teacher=dense, args=args, train_dataset=ds,
                                     callbacks=[sc.PruningCallback(sc.GradualPruning(sc.Unstructured(0.5), 0, 100))])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from ..inputs import Batch, Inputs
from ..schedule import GradualPruning
from ..tracking import Tracker, as_tracker, masked_sparsity
from .distill import Distiller


class PruningCallback(TrainerCallback):
    """Raise sparsity along ``pruning``'s schedule after every optimizer step, and add ``sparsity`` to the
    logs (and to ``log``: trackers or functions ``fn(metrics, step)``, on the main process)."""

    def __init__(self, pruning: GradualPruning | None = None, log: Tracker | Any = None) -> None:
        self.pruning, self.tracker = pruning, as_tracker(log)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.pruning is not None and state.global_step == 0:
            self.pruning.step(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.pruning is not None:
            self.pruning.step(model, state.global_step)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if logs is not None and model is not None:
            logs["sparsity"] = masked_sparsity(model)
        if state.is_world_process_zero and logs:
            self.tracker.log({k: v for k, v in logs.items() if isinstance(v, int | float)}, state.global_step)


class DistillationTrainer(Trainer):
    """A ``Trainer`` whose loss distils from ``teacher`` (the dense model): ``alpha * T^2 * KL`` of the
    logits (per token for language models) ``+ (1 - alpha) *`` the model's own loss (batches with
    ``labels``) or the next-token loss ``+ hidden_weight *`` hidden-state matching, as in
    :func:`secateur.finetune`. The teacher moves to the training device and never trains."""

    def __init__(self, *args: Any, teacher: nn.Module, temperature: float = 2.0, alpha: float = 0.5,
                 hidden_weight: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.distiller = Distiller(teacher.to(self.args.device).eval(), temperature, alpha, hidden_weight)
        self.model_accepts_loss_kwargs = False  # the loss is a mean per batch: Trainer scales it for accumulation

    def compute_loss(self, model: nn.Module, inputs: dict, return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> torch.Tensor | tuple:
        batch = Batch(Inputs((), dict(inputs)))
        out = self.distiller.student_inputs(batch.inputs).call(model)
        loss = self.distiller.loss(out, batch, torch.nn.functional.cross_entropy)
        return (loss, out) if return_outputs else loss
