"""The language-model recipe path, on a tiny random Llama with SmolLM2's real tokenizer."""

import json

import pytest
from typer.testing import CliRunner

import secateur as sc
from secateur.cli import app
from secateur.recipe import parse_recipe
from tests.conftest import tiny_llama_folder


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny-lm"))


def _recipe(folder, **overrides):
    return {"task": "language-model", "name": "tiny", "model": f"hf:{folder}",
            "calibration": {"windows": 4, "length": 32}, "evaluation": {"windows": 2, "length": 32},
            "steps": [{"prune": {"method": "sparsegpt", "pattern": "2:4"}}, {"export": {"formats": ["safetensors"]}}],
            **overrides}


def test_lm_recipe_runs_from_the_cli(hf_folder, tmp_path):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(hf_folder)))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    dense, pruned = (s["metrics"] for s in report["stages"])
    assert set(dense) >= {"perplexity[stdlib-docstrings]", "perplexity[python-reference]", "sample"}
    assert set(pruned["sparsity_per_layer"].values()) == {0.5} and len(pruned["sparsity_per_layer"]) == 14
    assert (tmp_path / "out" / "model" / "manifest.json").is_file()
    assert "| pruned |" in (tmp_path / "out" / "report.md").read_text()


def test_lm_recipe_errors_name_keys_and_choices(hf_folder):
    with pytest.raises(sc.RecipeError, match="unknown key 'calibraton'.*calibration"):
        parse_recipe(_recipe(hf_folder, calibraton={}))
    with pytest.raises(sc.RecipeError, match="unknown method 'obs'; choose one of magnitude"):
        parse_recipe(_recipe(hf_folder, steps=[{"prune": {"method": "obs"}}]))
    assert parse_recipe(_recipe(hf_folder)).steps[0].kind == "prune"


def test_smollm2_example_recipe_validates():
    from pathlib import Path

    from secateur.recipe import LMRecipe, load_recipe

    assert isinstance(load_recipe(Path(__file__).resolve().parents[1] / "examples" / "smollm2-wanda.yaml"), LMRecipe)


def test_lm_recipe_recovers_with_masks_held_and_logs_to_tensorboard(hf_folder, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from secateur.lm_pipeline import run_lm_recipe

    steps = [{"prune": {"method": "wanda", "sparsity": 0.5}},
             {"finetune": {"steps": 3, "length": 16, "batch_size": 2, "lr": 1e-3}}]
    report = run_lm_recipe(parse_recipe(_recipe(hf_folder, steps=steps, log={"tensorboard": True})), tmp_path,
                           progress=False)
    assert [s["name"] for s in report["stages"]] == ["dense", "pruned", "finetuned"]
    tuned = report["stages"][2]["metrics"]
    assert tuned["steps"] == 3 and tuned["tokens"] == 3 * 2 * 16 and tuned["sparsity"] == 0.5
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("finetune/loss")] == [1, 2, 3]
    ppl = [e.step for e in events.Scalars("stage/perplexity[python-reference]")]
    assert ppl == [0, 1, 2] and events.Scalars("prune/nonzero_after")[0].step == 1


def test_lm_recipe_streams_a_checkpoint_block_by_block(hf_folder, tmp_path):
    step = {"method": "wanda", "sparsity": 0.6, "profile": {"sensitivity": {"lam": 0.1}}}
    recipe = parse_recipe(_recipe(hf_folder, stream=True, steps=[{"prune": step}]))
    from secateur.lm_pipeline import lm_markdown, run_lm_recipe

    report = run_lm_recipe(recipe, tmp_path / "out", progress=False)
    dense, pruned = (s["metrics"] for s in report["stages"])
    assert pruned["perplexity[stdlib-docstrings]"] != dense["perplexity[stdlib-docstrings]"]
    assert sorted(pruned["sparsity_per_block"].values()) == pytest.approx([0.5, 0.7])
    assert (tmp_path / "out" / "model" / "model.safetensors.index.json").is_file()
    assert "asked per block 0.500 to 0.700" in lm_markdown(report)
    with pytest.raises(sc.RecipeError, match="hf:FOLDER"):
        parse_recipe(_recipe(hf_folder, model="llm:smollm2", stream=True))
