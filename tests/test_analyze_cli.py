import json

import pytest
import torch
from typer.testing import CliRunner

import secateur as sc
from secateur import analyze
from secateur.cli import app
from secateur.zoo.hf import bert, llama
from secateur.zoo.tricky import MHAModel, ResidualCNN

IDS = {"input_ids": torch.randint(0, 100, (2, 8))}


def test_analyze_lists_groups_and_reasons():
    a = analyze(MHAModel(), torch.randn(2, 5, 12))
    reasons = {g.members: g.skipped for g in a.groups}
    assert reasons["mha.out_proj.out => head.in"] is None
    assert reasons["inp.out => mha.q_proj.in => mha.k_proj.in => mha.v_proj.in"] is None  # the swap opens it
    assert a.replaced == ["mha"] and "`mha`" in a.to_markdown()
    assert a.skipped_modules["head"] == "tied to a model output"
    assert "| group | key | unit |" in a.to_markdown()


def test_analyze_reports_units_filter_and_ignore():
    a = analyze(llama().eval(), IDS, sc.Structured(sparsity=0.5, units=("heads",), ignore=("model.layers.1.*",)))
    skipped = [g.skipped for g in a.groups]
    assert sum(s is None for s in skipped) == 1  # only layer 0's key-value groups
    assert "unit 'channels' not in units=" in skipped and "matches ignore=" in skipped


def test_sparsity_that_removes_nothing_raises():
    with pytest.raises(sc.PruningError, match="removes nothing"):
        sc.prune(llama().eval(), sc.Structured(sparsity=0.2, units=("heads",)), example_inputs=IDS)


def test_units_absent_from_model_raise_with_available_ones():
    with pytest.raises(sc.PruningError, match=r"units=\('heads',\).*'channels'"):
        sc.prune(ResidualCNN(), sc.Structured(sparsity=0.5, units=("heads",)), example_inputs=torch.randn(1, 3, 8, 8))
    with pytest.raises(sc.InvalidParameterError, match=r"units=\('layers',\) is not valid"):
        sc.Structured(sparsity=0.5, units=("layers",))


@pytest.mark.parametrize("units", [("channels",), None])
def test_hf_save_pretrained_round_trip_where_config_expresses_the_shape(tmp_path, units):
    from transformers import BertModel, LlamaForCausalLM

    make, cls = (bert, BertModel) if units else (llama, LlamaForCausalLM)
    model = make().eval()
    sc.prune(model, sc.Structured(sparsity=0.5, units=units), example_inputs=IDS)
    model.save_pretrained(tmp_path)
    again = cls.from_pretrained(tmp_path).eval()
    assert torch.equal(again(**IDS)[0], model(**IDS)[0])


def test_hf_heads_not_expressible_in_bert_config_still_reload_with_secateur(tmp_path):
    model = bert().eval()
    sc.prune(model, sc.Structured(sparsity=0.5, units=("heads",)), example_inputs=IDS)
    sc.save(model, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kind"] == "secateur" and not (tmp_path / "config.json").exists()
    assert "heads" in manifest["huggingface"]["reason"] and not manifest["huggingface"]["loadable"]
    assert torch.equal(sc.load(tmp_path, base=bert).eval()(**IDS)[0], model(**IDS)[0])


def test_cli_analyze_prune_load_round_trip_on_zoo_and_hf_folder(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", "zoo:hf-bert", "--units", "heads,channels"])
    assert result.exit_code == 0 and "4 prunable groups of 6 (2 channels, 2 heads)" in result.output
    result = runner.invoke(app, ["prune", "zoo:residual-cnn", "--target", "0.5", "--out", str(tmp_path / "z")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["load", str(tmp_path / "z"), "--base", "zoo:residual-cnn"])
    assert result.exit_code == 0 and "loaded" in result.output
    bert().save_pretrained(tmp_path / "dense")  # an hf: folder
    hf = f"hf:{tmp_path / 'dense'}"
    assert runner.invoke(app, ["analyze", hf]).exit_code == 0
    result = runner.invoke(app, ["prune", hf, "--units", "heads", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["load", str(tmp_path / "p"), "--base", hf])
    # 2 of 4 heads (16 dims each) per layer: q/k/v rows 3*32*64 + 96 biases, o-proj columns 64*32 -> 8,288 a layer
    assert result.exit_code == 0 and "params 79,808 -> 63,232" in result.output


def test_cli_bad_model_spec_exits_2():
    result = CliRunner().invoke(app, ["analyze", "zoo:nope"])
    assert result.exit_code == 2 and "unknown zoo model 'nope'" in result.output
