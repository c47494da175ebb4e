"""Distillation from a dense teacher: logits KL with a temperature (Hinton et al. 2015), for classifiers and
for language models (one distribution per token), and optional hidden-state matching.

Hidden states are matched layer to layer (student layer ``i`` of ``n`` against teacher layer
``round(i * m / n)`` of ``m``, so depth-pruned students work), as a mean squared error normalised by
the teacher's mean square. Where a width-pruned student's hidden size differs from the teacher's, a
learned linear projection (student -> teacher width, one per matched layer, trained with the student
and discarded afterwards) carries it (as in TinyBERT, Jiao et al. 2020).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from ..inputs import Batch, Inputs, logits_of
from ..loss import LossFn, task_loss, token_ids


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                      temperature: float = 4.0, alpha: float = 0.7) -> torch.Tensor:
    """Hinton et al.'s loss: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y)``.

    >>> distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])).item() > 0
    True
    """
    kl = logits_kl(student, teacher, temperature)
    return alpha * kl + (1 - alpha) * F.cross_entropy(student, target)


def logits_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """``T^2 * KL(teacher_T || student_T)``, one distribution per row of the last dimension (per sample,
    or per token for ``(batch, length, vocabulary)`` logits), averaged over rows weighted by ``weights``.

    >>> logits_kl(torch.zeros(2, 5, 7), torch.zeros(2, 5, 7)).item()
    0.0
    """
    s = F.log_softmax(student.float().reshape(-1, student.shape[-1]) / temperature, -1)
    t = F.log_softmax(teacher.float().reshape(-1, teacher.shape[-1]) / temperature, -1)
    rows = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    w = torch.ones_like(rows) if weights is None else weights.reshape(-1).to(rows.dtype)
    return temperature**2 * (rows * w).sum() / w.sum().clamp_min(1)


def _pairs(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Student hidden-state index -> teacher index (embeddings to embeddings, last to last)."""
    return [(i, round(i * (n_teacher - 1) / max(n_student - 1, 1))) for i in range(n_student)]


class Distiller(nn.Module):
    """The training loss with a teacher: ``alpha * KL + (1 - alpha) * task + hidden * hidden-state MSE``.

    ``projections`` holds the learned width projections (created on the first batch that needs them);
    the loop adds its parameters to the optimizer.

    >>> d = Distiller(nn.Linear(3, 2), temperature=2.0, alpha=1.0)
    >>> b = Batch(Inputs((torch.ones(4, 3),)))
    >>> d.loss(nn.Linear(3, 2)(torch.ones(4, 3)), b, F.cross_entropy).dim()
    0
    """

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.7, hidden: float = 0.0) -> None:
        super().__init__()
        if temperature <= 0 or not 0 <= alpha <= 1 or hidden < 0:
            raise InvalidParameterError(f"distillation needs temperature > 0, 0 <= alpha <= 1 and hidden >= 0; got "
                                        f"temperature={temperature}, alpha={alpha}, hidden={hidden}")
        self.teacher = [teacher.eval()]  # a list: not a submodule, so never trained or saved with the student
        self.temperature, self.alpha, self.hidden = temperature, alpha, hidden
        self.projections = nn.ModuleDict()

    def student_inputs(self, inputs: Inputs) -> Inputs:
        """The inputs with ``output_hidden_states=True`` when hidden states are matched (Hugging Face models)."""
        return Inputs(inputs.args, {**inputs.kwargs, "output_hidden_states": True}) if self.hidden else inputs

    def loss(self, out: object, batch: Batch, loss_fn: LossFn) -> torch.Tensor:
        """The combined loss of the student's output ``out`` on ``batch``."""
        with torch.no_grad():
            taught = self.student_inputs(batch.inputs).call(self.teacher[0])
        logits = logits_of(out)
        ids = token_ids(batch.inputs)
        mask = batch.inputs.kwargs.get("attention_mask") if ids is not None and logits.dim() == 3 else None
        total = self.alpha * logits_kl(logits, logits_of(taught), self.temperature, mask)
        if self.alpha < 1:
            total = total + (1 - self.alpha) * task_loss(out, batch, loss_fn)
        if self.hidden:
            total = total + self.hidden * self.hidden_loss(_hidden(out), _hidden(taught))
        return total

    def hidden_loss(self, student: tuple, teacher: tuple) -> torch.Tensor:
        """Normalised MSE of matched hidden states, through a learned projection where widths differ."""
        losses = []
        for i, j in _pairs(len(student), len(teacher)):
            s, t = student[i].float(), teacher[j].float()
            if s.shape[-1] != t.shape[-1]:
                key = str(i)
                if key not in self.projections:
                    self.projections[key] = nn.Linear(s.shape[-1], t.shape[-1], bias=False).to(s.device)
                s = self.projections[key](s)
            losses.append((s - t).pow(2).mean() / t.pow(2).mean().clamp_min(1e-12))
        return torch.stack(losses).mean()


def _hidden(out: object) -> tuple:
    states = out.get("hidden_states") if isinstance(out, dict) else getattr(out, "hidden_states", None)
    if not states:
        raise InvalidParameterError("hidden-state distillation needs a model that returns hidden_states when "
                                    "called with output_hidden_states=True (a Hugging Face model); set "
                                    "hidden_weight=0 for other models")
    return tuple(states)
