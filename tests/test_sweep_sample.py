"""A sampled architecture sweep: a dozen Hugging Face families must end in the class recorded in
docs/coverage.json (benchmarks/sweep.py wrote it), so a regression, or a fix that is not recorded, fails here."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
pytest.importorskip("transformers")

from hfsweep.outcome import CLASSES, PASSED  # noqa: E402
from hfsweep.pipeline import run  # noqa: E402

RECORDED = json.loads((ROOT / "docs" / "coverage.json").read_text())["models"]
SAMPLE = (  # one or two per family: encoder, decoder (MHA, GQA, MoE, fused), encoder-decoder, vision, audio, multimodal
    "bert", "gpt2", "llama", "mixtral", "falcon", "t5", "whisper", "vit", "swin", "resnet", "convnext", "wav2vec2",
    "clip", "glm4v",
)
TP_SAMPLE = ("bert", "gpt2", "vit", "resnet", "t5")


def _run(model_type: str, tool: str) -> dict:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run(model_type, tool).to_dict()


@pytest.mark.parametrize("model_type", SAMPLE)
def test_secateur_outcome_matches_the_recorded_sweep(model_type):
    recorded = RECORDED[model_type]["secateur"]
    got = _run(model_type, "secateur")
    assert got["outcome"] in CLASSES
    assert (got["outcome"], got["stage"]) == (recorded["outcome"], recorded["stage"]), got["message"]
    if got["outcome"] == PASSED:
        assert got["params_after"] == recorded["params_after"] < got["params_before"] == recorded["params_before"]


def test_the_sample_covers_passes_and_every_family():
    assert len(SAMPLE) >= 12 and {RECORDED[t]["secateur"]["outcome"] for t in SAMPLE} >= {PASSED}


@pytest.mark.slow
@pytest.mark.parametrize("model_type", TP_SAMPLE)
def test_torch_pruning_outcome_matches_the_recorded_sweep(model_type):
    pytest.importorskip("torch_pruning")
    recorded = RECORDED[model_type]["torch-pruning"]
    got = _run(model_type, "torch-pruning")
    assert (got["outcome"], got["stage"]) == (recorded["outcome"], recorded["stage"]), got["message"]
