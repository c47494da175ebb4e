"""Hand-written architectures that exercise every coupling rule (the conformance suite's zoo)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _img(c: int = 3, s: int = 16) -> tuple[torch.Tensor]:
    return (torch.randn(2, c, s, s),)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.GELU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5))

    def forward(self, x):
        return self.net(x)


class ResidualCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                   nn.Conv2d(32, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.block(x))
        return self.head(x.mean((2, 3)))


class Inception(nn.Module):
    """Branches concatenated on the channel dim."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 12, 3, padding=1)
        self.c = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(3, 6, 1))
        self.mix = nn.Conv2d(26, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.cat([F.relu(self.a(x)), F.relu(self.b(x)), self.c(x)], dim=1)
        return self.head(F.adaptive_avg_pool2d(F.relu(self.mix(x)), 1).flatten(1))


class SplitBranches(nn.Module):
    """A conv output chunked in two along channels, each half processed, then added."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.left, self.right = nn.Conv2d(16, 8, 1), nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        a, b = self.conv(x).chunk(2, dim=1)
        y = F.relu(self.left(a)) + F.relu(self.right(b))
        return self.head(y.mean((2, 3)))


class DepthwiseSeparable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw1 = nn.Sequential(nn.Conv2d(3, 24, 1), nn.BatchNorm2d(24), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.BatchNorm2d(24), nn.ReLU6())
        self.pw2 = nn.Sequential(nn.Conv2d(24, 16, 1), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.pw2(self.dw(self.pw1(x))).mean((2, 3)))


class GroupedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.grouped = nn.Conv2d(32, 64, 3, padding=1, groups=4)
        self.norm = nn.GroupNorm(8, 64)
        self.conv2 = nn.Conv2d(64, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.norm(self.grouped(F.relu(self.conv1(x))))
        return self.head(F.relu(self.conv2(F.relu(x))).mean((2, 3)))


class TransposedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 12, 2, stride=2)
        self.out = nn.Conv2d(12, 2, 1)

    def forward(self, x):
        return self.out(F.relu(self.up(F.relu(self.down(x)))))


class UNet(nn.Module):
    """Encoder-decoder with a skip connection concatenated onto the upsampled path."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec = nn.Conv2d(32, 16, 3, padding=1)
        self.out = nn.Conv2d(16, 1, 1)

    def forward(self, x):
        s = F.relu(self.enc1(x))
        y = F.relu(self.enc2(F.max_pool2d(s, 2)))
        y = torch.cat([F.relu(self.up(y)), s], dim=1)
        return self.out(F.relu(self.dec(y)))


class SharedTwice(nn.Module):
    """One conv applied twice: its input and output channels are the same space."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, 16, 3, padding=1)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.inp(x))
        x = F.relu(self.shared(F.relu(self.shared(x))))
        return self.head(x.mean((2, 3)))


class MultiIO(nn.Module):
    """Two inputs and two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(10, 32), nn.Linear(6, 32)
        self.trunk = nn.Linear(32, 24)
        self.out1, self.out2 = nn.Linear(24, 3), nn.Linear(24, 2)

    def forward(self, x, y):
        h = F.relu(self.trunk(F.relu(self.a(x) + self.b(y))))
        return self.out1(h), self.out2(h)


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn = nn.Conv1d(4, 16, 5, padding=2), nn.BatchNorm1d(16)
        self.c2 = nn.Conv1d(16, 16, 3, padding=1)
        self.head = nn.Linear(16 * 8, 3)

    def forward(self, x):
        x = F.max_pool1d(F.relu(self.bn(self.c1(x))), 2)
        return self.head(torch.flatten(F.relu(self.c2(x)), 1))


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(32, 8), nn.Linear(8, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        x = F.relu(self.conv(x))
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return self.head((x * w[:, :, None, None]).mean((2, 3)))


class Attention(nn.Module):
    """Attention written with q/k/v/o Linear layers, matmul and softmax, plus a layer scale."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.scale = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        b, n, _ = x.shape
        split = lambda t: t.view(b, n, -1, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = (q @ k.transpose(-2, -1) / self.head_dim**0.5).softmax(-1)
        return x + self.scale * self.o((att @ v).transpose(1, 2).reshape(b, n, -1))


class TinyTransformer(nn.Module):
    """Token + learned position embeddings (bare Parameter), attention block, MLP, mean pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(50, 32)
        self.pos = nn.Parameter(torch.randn(1, 12, 32) * 0.02)
        self.attn = Attention()
        self.norm = nn.LayerNorm(32)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 3)

    def forward(self, ids):
        x = self.attn(self.tok(ids) + self.pos[:, : ids.shape[1]])
        x = x + self.mlp(self.norm(x))
        return self.head(x.mean(1))


class RNNHead(nn.Module):
    def __init__(self, cell: type[nn.RNNBase] = nn.LSTM) -> None:
        super().__init__()
        self.rnn = cell(8, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class MHAModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(12, 32)
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        h = F.relu(self.inp(x))
        a, _ = self.mha(h, h, h)
        return self.head(a.mean(1))


class BagOfWords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 48)
        self.fc = nn.Sequential(nn.Linear(48, 32), nn.Tanh(), nn.Linear(32, 2))

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(1))


def _ids(vocab: int = 50, n: int = 12) -> tuple[torch.Tensor]:
    return (torch.randint(0, vocab, (2, n)),)


TRICKY = {
    "mlp": (MLP, lambda: (torch.randn(2, 20),)),
    "residual-cnn": (ResidualCNN, _img),
    "inception-concat": (Inception, _img),
    "split-chunk": (SplitBranches, _img),
    "depthwise-separable": (DepthwiseSeparable, _img),
    "grouped-conv-groupnorm": (GroupedConv, _img),
    "transposed-conv": (TransposedConv, _img),
    "unet-skip-concat": (UNet, _img),
    "shared-module-twice": (SharedTwice, _img),
    "multi-input-output": (MultiIO, lambda: (torch.randn(2, 10), torch.randn(2, 6))),
    "conv1d": (Conv1dNet, lambda: (torch.randn(2, 4, 16),)),
    "squeeze-excite": (SqueezeExcite, _img),
    "qkv-attention-layerscale": (TinyTransformer, _ids),
    "lstm": (lambda: RNNHead(nn.LSTM), lambda: (torch.randn(2, 7, 8),)),
    "gru": (lambda: RNNHead(nn.GRU), lambda: (torch.randn(2, 7, 8),)),
    "multihead-attention": (MHAModel, lambda: (torch.randn(2, 5, 12),)),
    "bag-of-words": (BagOfWords, lambda: _ids(100)),
}
