"""One-shot pruning of language models: magnitude, Wanda and SparseGPT, layer by layer."""

from .corpus import load_corpus, perplexity, windows
from .layerwise import prune_layerwise
from .methods import Magnitude, SparseGPT, Wanda

__all__ = ["Magnitude", "SparseGPT", "Wanda", "load_corpus", "perplexity", "prune_layerwise", "windows"]
