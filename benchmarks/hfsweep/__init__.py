"""The architecture sweep: every Hugging Face model type, tiny, pruned by secateur and by Torch-Pruning.

``benchmarks/sweep.py`` runs it; ``docs/coverage.md`` and ``docs/coverage.json`` hold the results.
"""
