"""Fine-tuning with masks held: the loop (``loop.py``), distillation (``distill.py``), data-parallel
training (``distributed.py``), and Hugging Face ``Trainer`` integration (``hf.py``, imported on use)."""

from .distill import Distiller, distillation_loss, logits_kl
from .loop import FinetuneResult, finetune

__all__ = ["Distiller", "FinetuneResult", "distillation_loss", "finetune", "logits_kl"]
