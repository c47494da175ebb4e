"""Block-wise output reconstruction after one-shot pruning, the ``reconstruct=`` option of every one-shot method.

EBFT (Guo et al. 2024, "EBFT: Effective and Block-Wise Fine-Tuning for Sparse LLMs", arXiv:2402.12419):
per-layer methods (Wanda, SparseGPT) each reconstruct one layer's output, so errors add up inside a
block and across blocks. EBFT instead tunes the kept weights of each pruned block, by backpropagation on
the calibration set only, to minimise the mean squared error between the block's output and the dense
block's output on the same inputs (the pruned model's hidden states), block after block. No training
data and no loss of the whole model: the block's own outputs are the targets.

Here the engine computes the dense block's outputs before pruning it, prunes it, then ``fit`` runs
``epochs`` passes of Adam (linear decay of the learning rate, gradients clipped to norm 1) over steps of
``batch_size`` calibration sequences in a fixed shuffled order, on the pruned layers' weights; the masks keep the pruned
entries at zero. Differences from the paper's code: Adam without weight decay, and the norm weights stay
as they are (only the pruned layers' weights move, so a failed run is rolled back exactly).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..errors import InvalidParameterError
from ..schema import Spec, build
from .profiles import options_of

Step = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # () -> (the block's output with grad, the target)


@dataclass(frozen=True)
class Reconstruction(Spec):
    """Tune each pruned block's kept weights towards dense outputs (EBFT): ``epochs`` over the
    calibration set in steps of ``batch_size`` sequences, with Adam at learning rate ``lr``. The targets
    are the dense block's outputs on the pruned model's inputs (``target="block"``, EBFT's), or the dense
    model's own hidden states after the block (``"model"``: the block also corrects the error of the
    blocks before it).

    >>> Reconstruction.coerce("epochs=3,lr=0.0002", text=True)
    Reconstruction(epochs=3, lr=0.0002, batch_size=1, target='block')
    """

    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 1
    target: Literal["block", "model"] = "block"

    def validate(self) -> None:
        if self.epochs < 1:
            raise InvalidParameterError(f"reconstruct epochs={self.epochs} must be at least 1")
        if not 0 < self.lr < 1:
            raise InvalidParameterError(f"reconstruct lr={self.lr} must be in (0, 1), e.g. 0.001")
        if self.batch_size < 1:
            raise InvalidParameterError(f"reconstruct batch_size={self.batch_size} must be a positive number of "
                                        "sequences")

    @classmethod
    def describe(cls) -> str:
        return "block reconstruction options (e.g. {epochs: 2, lr: 0.001, batch_size: 1}; true for the defaults)"

    def to_value(self) -> dict[str, Any]:
        return self.fields_dict()

    @classmethod
    def coerce(cls, value: Any, text: bool = False) -> Reconstruction:
        if isinstance(value, Reconstruction):
            return value
        return build(cls, options_of(value, text), text=text, where=cls.__name__)

    def fit(self, params: list[torch.nn.Parameter], steps: Sequence[Step]) -> tuple[float, float]:
        """Adam over ``steps`` (each gives an output and its target) for ``epochs``; returns the mean loss
        of the first and of the last epoch."""
        optimizer = torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.95))
        total = self.epochs * len(steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1 - k / total)
        order = torch.Generator().manual_seed(0)
        losses = []
        with torch.enable_grad():
            for _ in range(self.epochs):
                epoch = 0.0
                for i in torch.randperm(len(steps), generator=order).tolist():
                    output, target = steps[i]()
                    loss = torch.nn.functional.mse_loss(output.float(), target.float())
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    schedule.step()
                    epoch += float(loss.detach()) / len(steps)
                losses.append(epoch)
        return losses[0], losses[-1]
