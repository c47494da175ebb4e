"""One-shot pruning of language models (the engine behind ``Magnitude``, ``Wanda``, ``SparseGPT`` and any
``OneShot`` method), block-streamed pruning of checkpoints larger than memory, the shipped offline corpora,
token windows and perplexity."""

from .corpus import load_corpus, perplexity, windows
from .engine import decoder_layers, run_oneshot
from .shards import prune_checkpoint

__all__ = ["decoder_layers", "load_corpus", "perplexity", "prune_checkpoint", "run_oneshot", "windows"]
