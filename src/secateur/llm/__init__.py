"""One-shot pruning of language models (the engine behind ``Magnitude``, ``Wanda``, ``SparseGPT`` and any
``OneShot`` method), the shipped offline corpora, token windows and perplexity."""

from .corpus import load_corpus, perplexity, windows
from .engine import decoder_layers, run_oneshot

__all__ = ["decoder_layers", "load_corpus", "perplexity", "run_oneshot", "windows"]
