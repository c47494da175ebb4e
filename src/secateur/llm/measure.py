"""The dense pass that measures a non-uniform sparsity profile (``OneShot(profile=OWL())`` and the like).

Before anything is pruned, the calibration set goes through the dense model block by block once: the
input norms of every layer stream over the micro-batches (OWL's outlier ratios need ``|W| * ||X||``),
and, for a profile that needs it, the block is pruned alone with Wanda scores on a copy of its weights
and its output compared with the dense one. The profile turns the per-block scores into per-block
sparsities (``methods/profiles.py``), which the engine then applies as an explicit profile; a
``LossSearch`` keeps the input norms instead and searches on the whole model (``llm/search.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import PruningError
from ..methods import OneShot
from ..methods.profiles import LossSearch, Profile
from ..methods.wanda import ColumnNorms
from ..progress import progress_bar
from ..selection import keep_top_rows
from ..surgery import stored
from .blocks import Layer, block_layers, device_of, in_features, is_conv1d, weight_of
from .passes import release_freed
from .search import search_profile
from .states import call_block, layer_tokens


def resolve_profile(method: OneShot, open_stream: Callable[[str], object], prefix: str, blocks: nn.ModuleList,
                    enter: Callable[[int], None], leave: Callable[[int], None], progress: bool,
                    model: nn.Module | None = None, calibration: object = None) -> dict[str, float] | None:
    """Per-block sparsities ``{"<prefix>.<i>.*": s}`` when ``method.profile`` is measured, else None.
    ``enter(i)`` / ``leave(i)`` bring block ``i``'s weights in and let them go (models on disk, for which
    ``model`` is None: a search, which runs the whole model, is refused)."""
    profile = method.profile
    if not isinstance(profile, Profile):
        return None
    if isinstance(profile, LossSearch) and model is None:
        raise PruningError("profile=search runs the whole model for every candidate, so it needs the model in memory; "
                           "for a model pruned from files use profile=owl or an explicit per-block profile")
    stream = open_stream("measure")
    scores, layers, norms = [], [], []
    for i in progress_bar(range(len(blocks)), f"{profile.key} profile", enabled=progress):
        enter(i)
        found, _ = block_layers(blocks[i], f"{prefix}.{i}", method.ignore)
        pairs, error = measure_block(profile, blocks[i], found, stream, method.sparsity)
        if isinstance(profile, LossSearch):
            layers.append(found)
            norms.append([n for _, n in pairs])
        else:
            scores.append(profile.block_score(pairs, error))
        leave(i)
        release_freed()
    sparsities = search_profile(model, profile, layers, norms, method, calibration, progress) \
        if isinstance(profile, LossSearch) else profile.sparsities(scores, method.sparsity)
    return {f"{prefix}.{i}.*": s for i, s in enumerate(sparsities)}


def measure_block(profile: Profile, block: nn.Module, layers: list[Layer], stream,
                  sparsity: float) -> tuple[list, float | None]:
    """Each layer's ``(weight, input norms)`` and, when the profile needs it, the block's error pruned
    alone; ``stream`` moves on to the dense block's outputs."""
    norms = {id(lay.module): ColumnNorms(in_features(lay.module)) for lay in layers}
    current: dict = {}
    hooks = [lay.module.register_forward_pre_hook(
        lambda m, a: norms[id(m)].update(layer_tokens(a[0], current["state"].tokens))) for lay in layers]
    sink = stream.next_store()
    device = device_of(block)
    try:
        for i, state in enumerate(stream.states):
            current["state"] = state
            sink.put(i, call_block(block, stream.store.get(i, device), state))
    finally:
        for h in hooks:
            h.remove()
    pairs = [(weight_of(lay.module), norms[id(lay.module)].norms()) for lay in layers]
    error = trial_error(block, layers, pairs, stream, sink, sparsity) if profile.needs_error else None
    stream.store = sink
    return pairs, error


def trial_error(block: nn.Module, layers: list[Layer], pairs: list, stream, dense, sparsity: float) -> float:
    """``||Y_pruned - Y||^2 / ||Y - X||^2`` with the block pruned alone by Wanda scores (restored after)."""
    saved = [stored(lay.module, "weight").detach().clone() for lay in layers]
    device = device_of(block)
    error = change = 0.0
    try:
        for lay, (w, n) in zip(layers, pairs, strict=True):
            trial = w * keep_top_rows(w.abs() * n.to(w.device)[None, :], sparsity)
            stored(lay.module, "weight").copy_(trial.T if is_conv1d(lay.module) else trial)
        for i, state in enumerate(stream.states):
            x, y = stream.store.get(i, device), dense.get(i, device)
            error += float((call_block(block, x, state) - y).float().pow(2).sum())
            change += float((y - x).float().pow(2).sum())
    finally:
        for lay, w in zip(layers, saved, strict=True):
            stored(lay.module, "weight").copy_(w)
    return error / max(change, 1e-30)
