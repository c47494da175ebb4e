"""The user's own data and model outputs everywhere: tokenizer dicts, Hugging Face outputs, text columns,
token ids with no labels, a user's forward function; and the command line on an hf: folder."""

import json

import pytest
import torch
from typer.testing import CliRunner

import secateur as sc
from secateur.cli import app
from secateur.planner import Planner
from secateur.zoo.hf import bert, llama

IDS = torch.randint(0, 100, (4, 12), generator=torch.Generator().manual_seed(0))


def _llama():
    torch.manual_seed(0)
    return llama().eval()


@pytest.mark.parametrize("criterion", ["taylor", "hessian", "activation"])
def test_data_criteria_score_a_causal_lm_from_token_ids_alone(criterion):
    """No labels: the next-token loss gives the gradients (it failed with 'a loss needs (inputs, targets)')."""
    model = _llama()
    with_labels = Planner(model, sc.Structured(sparsity=0.25, criterion=criterion, units=("channels",)),
                          {"input_ids": IDS[:1]}, [{"input_ids": IDS, "labels": IDS}]).scores
    ids_only = Planner(model, sc.Structured(sparsity=0.25, criterion=criterion, units=("channels",)),
                       {"input_ids": IDS[:1]}, [IDS]).scores
    assert with_labels.keys() == ids_only.keys() and len(ids_only) == 2
    for key, scores in with_labels.items():
        assert torch.allclose(scores, ids_only[key], rtol=1e-5, atol=1e-9)


def test_structured_pruning_of_a_causal_lm_defaults_to_a_data_aware_criterion_when_given_calibration():
    from secateur.methods.structured import LM_CRITERION

    method = sc.Structured(sparsity=0.25, units=("channels",))
    assert method.criterion is None and LM_CRITERION != "magnitude"
    default = Planner(_llama(), method, {"input_ids": IDS[:1]}, [IDS])
    activation = Planner(_llama(), sc.Structured(sparsity=0.25, units=("channels",), criterion=LM_CRITERION),
                         {"input_ids": IDS[:1]}, [IDS])
    magnitude = Planner(_llama(), sc.Structured(sparsity=0.25, units=("channels",), criterion="magnitude"),
                        {"input_ids": IDS[:1]})
    assert default.plan().to_dict() == activation.plan().to_dict() != magnitude.plan().to_dict()
    assert Planner(_llama(), method, {"input_ids": IDS[:1]}).plan().to_dict() == magnitude.plan().to_dict()


def test_finetune_takes_hf_classification_outputs_with_separate_targets():
    """({'input_ids': ...}, targets) batches and a SequenceClassifierOutput (it raised AttributeError)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=64, vocab_size=100, num_labels=3))
    targets = torch.tensor([0, 1, 2, 0])
    data = [({"input_ids": IDS, "attention_mask": torch.ones_like(IDS)}, targets)] * 4
    result = sc.finetune(model, data, epochs=3, lr=1e-3, progress=False)
    assert result.steps == 12 and result.losses[-1] < result.losses[0]


def test_profile_takes_a_tokenizer_dict():
    """It crashed with 'dict' object has no attribute 'shape'."""
    torch.manual_seed(0)
    model = bert().eval()
    inputs = {"input_ids": IDS[:2], "attention_mask": torch.ones_like(IDS[:2])}
    profile = sc.profile(model, inputs, runs=2, warmup=1)
    assert profile.batch_size == 2 and profile.params == sum(p.numel() for p in model.parameters())
    assert profile.macs > 0 and set(profile.latency_ms) == {"torch", "onnxruntime"}


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    from transformers import AutoTokenizer

    from secateur.zoo.llm import smollm2_file

    path = smollm2_file()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    folder = tmp_path_factory.mktemp("tiny-lm")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cli_profile_of_an_hf_folder(hf_folder):
    result = CliRunner().invoke(app, ["profile", f"hf:{hf_folder}", "--runs", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])  # transformers' loading bar may come first
    assert report["batch_size"] == 2 and report["params"] > 0 and report["macs"] > 0


def test_cli_sensitivity_of_an_hf_lm_measures_on_the_calibration_text(hf_folder, tmp_path, monkeypatch):
    seen = {}
    import secateur.allocation as allocation

    real = allocation.sensitivity

    def spy(model, method, **kwargs):
        seen.update(kwargs)
        return real(model, method, **kwargs)

    monkeypatch.setattr(allocation, "sensitivity", spy)
    result = CliRunner().invoke(app, ["sensitivity", f"hf:{hf_folder}", "--out", str(tmp_path), "--levels", "0.5",
                                      "--units", "channels", "--calibration-text", "python-reference",
                                      "--windows", "2x16", "--quiet"])
    assert result.exit_code == 0, result.output
    from secateur.calibration import text_windows

    expected = text_windows(f"hf:{hf_folder}", "python-reference", "2x16")
    assert torch.equal(seen["example_inputs"]["input_ids"], expected) and torch.equal(seen["calibration"], expected)
    assert len(json.loads((tmp_path / "sensitivity.json").read_text())["curves"]) == 2


def test_cli_prunes_an_hf_lm_with_text_calibration_and_the_data_aware_default(hf_folder, tmp_path):
    result = CliRunner().invoke(app, ["prune", f"hf:{hf_folder}", "--out", str(tmp_path / "p"), "--units", "channels",
                                      "--sparsity", "0.25", "--calibration-text", "stdlib-docstrings",
                                      "--windows", "2x16", "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "prune.json").read_text())
    assert record["method"]["criterion"] is None and record["params_after"] < record["params_before"]


def test_cli_calibration_errors_name_the_fix(hf_folder, tmp_path):
    both = CliRunner().invoke(app, ["prune", "zoo:mlp", "--out", str(tmp_path), "--calibration", "x.npz",
                                    "--calibration-text", "stdlib-docstrings"])
    assert both.exit_code == 2 and "not both" in both.output
    wrong = CliRunner().invoke(app, ["prune", "zoo:mlp", "--out", str(tmp_path), "--calibration-text",
                                     "python-reference"])
    assert wrong.exit_code == 2 and "hf:FOLDER" in wrong.output
    shape = CliRunner().invoke(app, ["prune", f"hf:{hf_folder}", "--out", str(tmp_path), "--calibration-text",
                                     "python-reference", "--windows", "32"])
    assert shape.exit_code == 2 and "COUNTxLENGTH" in shape.output
