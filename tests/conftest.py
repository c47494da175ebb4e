"""Shared fixtures. One torch thread: two cores are easily oversubscribed (onnxruntime has its own)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from secateur.training import finetune
from secateur.zoo import DigitsCNN, digits

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data():
    return digits()


@pytest.fixture(scope="session")
def _trained_cnn(data) -> nn.Module:
    torch.manual_seed(0)
    model = DigitsCNN()
    finetune(model, data.train.loader(64, shuffle=True), epochs=3, lr=3e-3, progress=False)
    return model.eval()


@pytest.fixture
def trained_cnn(_trained_cnn) -> nn.Module:
    """A digits CNN trained for 3 epochs (a fresh copy per test)."""
    return copy.deepcopy(_trained_cnn)


class Residual(nn.Module):
    """conv -> bn -> relu, then a residual conv block, flatten, two Linears."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc1, self.fc2 = nn.Linear(16 * 4 * 4, 32), nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = x + torch.relu(self.b2(self.c2(x)))
        x = nn.functional.max_pool2d(x, 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def randomize_bn(model: nn.Module) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics so eval-mode tests exercise them."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def zero_residual_channels(model: Residual, drop: list[int]) -> None:
    """Zero every weight of ``drop`` channels of Residual's residual group, so they contribute nothing."""
    with torch.no_grad():
        for conv, bn in ((model.c1, model.b1), (model.c2, model.b2)):
            conv.weight[drop] = 0
            conv.bias[drop] = 0
            bn.weight[drop] = 0
            bn.bias[drop] = 0
        model.c2.weight[:, drop] = 0
        model.fc1.weight.view(32, 16, 16)[:, drop] = 0


def tiny_llama_folder(folder, **config) -> object:
    """A Hugging Face folder with a tiny random Llama (``config`` overrides its sizes) and SmolLM2's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from secateur.zoo.llm import smollm2_file

    path = smollm2_file()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, **config}
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **sizes)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
