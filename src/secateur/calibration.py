"""Calibration data for the command line: a ``.npz`` file of arrays, or text tokenized with a Hugging Face
model folder's own tokenizer into windows of token ids."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .errors import InvalidParameterError, ModelFileError


def parse_windows(text: str) -> tuple[int, int]:
    """``"32x512"`` -> ``(32, 512)``: windows x tokens per window.

    >>> parse_windows("8x128")
    (8, 128)
    """
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 2:
        raise InvalidParameterError(f"windows {text!r} must be COUNTxLENGTH, e.g. 32x512 (32 windows of 512 tokens)")
    return int(match[1]), int(match[2])


def text_windows(model_spec: str, text: str, shape: str = "32x512") -> torch.Tensor:
    """Token windows of ``text`` (a shipped corpus name or a UTF-8 file) from the start, tokenized by the
    tokenizer saved beside an ``hf:FOLDER`` model."""
    from .llm.corpus import load_corpus, windows
    from .resolve import transformers_module

    if not model_spec.startswith("hf:"):
        raise InvalidParameterError(f"--calibration-text needs an hf:FOLDER model with its tokenizer, not "
                                    f"{model_spec!r}; give other models --calibration FILE.npz (input_ids)")
    folder = Path(model_spec.removeprefix("hf:"))
    count, length = parse_windows(shape)
    try:
        tokenizer = transformers_module().AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{folder} has no tokenizer to read --calibration-text with ({err}); save it there "
                             "with tokenizer.save_pretrained(folder)") from None
    ids = tokenizer(load_corpus(text), return_tensors="pt").input_ids[0]
    return windows(ids, length, count)
