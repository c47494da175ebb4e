import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import secateur as sc
from secateur.cli import app, demo_recipe_path
from secateur.pipeline import run_recipe
from secateur.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "name": "tiny", "model": "zoo:digits-cnn", "data": "digits", "train": {"epochs": 1},
    "steps": [{"prune": {"method": "structured", "target": {"macs": 0.5}, "round_to": 8}},
              {"finetune": {"epochs": 1}}, {"quantize": {"calibration_batches": 2}}, {"export": {}}],
    "report": {"batch_size": 32, "runs": 3, "plot": True},
}


def test_examples_validate_and_demo_example_is_the_embedded_default():
    for path in (ROOT / "examples").glob("*.yaml"):
        load_recipe(path)
    assert (ROOT / "examples" / "demo.yaml").read_text() == demo_recipe_path().read_text()


def test_misspelt_key_names_the_key_and_valid_keys():
    bad = {**TINY, "steps": [{"prune": {"method": "structured", "sparsty": 0.5}}]}
    with pytest.raises(sc.RecipeError) as err:
        parse_recipe(bad)
    assert "steps.0.prune" in str(err.value) and "'sparsty'" in str(err.value)
    assert "sparsity" in str(err.value) and "round_to" in str(err.value)


def test_misspelt_top_level_key():
    with pytest.raises(sc.RecipeError, match="unknown key 'stepz'.*steps"):
        parse_recipe({"model": "zoo:digits-cnn", "stepz": []})


def test_unknown_method_lists_choices():
    with pytest.raises(sc.RecipeError, match="unknown method 'lottery'; choose one of .*structured"):
        parse_recipe({**TINY, "steps": [{"prune": {"method": "lottery"}}]})


def test_unknown_criterion_and_model_list_choices():
    with pytest.raises(sc.RecipeError, match="unknown criterion 'taylorr'; choose one of activation"):
        parse_recipe({**TINY, "steps": [{"prune": {"method": "structured", "sparsity": 0.5, "criterion": "taylorr"}}]})
    with pytest.raises(sc.RecipeError, match="unknown zoo model 'resnet9000'; choose one of .*digits-cnn"):
        parse_recipe({**TINY, "model": "zoo:resnet9000"})


def test_step_must_have_one_kind():
    with pytest.raises(sc.RecipeError, match="exactly one"):
        parse_recipe({**TINY, "steps": [{"prune": {"method": "structured", "sparsity": 0.5}, "finetune": {}}]})


def test_missing_recipe_file_raises(tmp_path):
    with pytest.raises(sc.ModelFileError, match="no recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_recipe_runs_end_to_end(tmp_path):
    report = run_recipe(parse_recipe(TINY), tmp_path, progress=False)
    names = [s["name"] for s in report["stages"]]
    assert names == ["dense", "pruned", "finetuned", "quantized"]
    dense, _, finetuned, quantized = (s["metrics"] for s in report["stages"])
    assert finetuned["macs"] <= 0.5 * dense["macs"] and finetuned["params"] < dense["params"]
    assert quantized["file_bytes"] < finetuned["file_bytes"]
    for stage in report["stages"]:
        m = stage["metrics"]
        assert isinstance(m["accuracy"], float) and 0 <= m["accuracy"] <= 1
        assert isinstance(m["params"], int) and isinstance(m["macs"], int) and isinstance(m["file_bytes"], int)
        assert set(m["latency_ms"]) == {"torch", "onnxruntime"} and all(v > 0 for v in m["latency_ms"].values())
    assert (tmp_path / "model" / "manifest.json").is_file() and (tmp_path / "model.onnx").is_file()


def test_cli_run_writes_reports_and_bad_recipe_exits_2(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "steps": TINY["steps"][:2]}))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["dense", "pruned", "finetuned"]
    assert (out / "report.md").read_text().startswith("# secateur report: tiny")
    assert (out / "report.png").stat().st_size > 10_000 and (out / "report.html").is_file()
    recipe.write_text(yaml.safe_dump({**TINY, "modle": "x"}))
    bad = CliRunner().invoke(app, ["run", str(recipe), "--quiet"])
    assert bad.exit_code == 2 and "unknown key 'modle'" in bad.output


def test_report_explains_what_survived(tmp_path):
    report = run_recipe(parse_recipe({**TINY, "steps": TINY["steps"][:1]}), tmp_path, progress=False)
    explained = report["interpretability"]
    assert set(explained["kept_fraction"]) == {"conv1", "conv2", "fc1"}
    for key, unit in explained["units"].items():
        assert len(unit["scores"]) == unit["size"] and len(unit["kept"]) == round(explained["kept_fraction"][key]
                                                                                  * unit["size"])
    assert len(explained["input_importance_after"]) == 8
