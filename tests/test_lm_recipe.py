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
