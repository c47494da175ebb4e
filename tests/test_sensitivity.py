import copy

import pytest
from typer.testing import CliRunner

import secateur as sc
from secateur.cli import app
from secateur.counting import count_macs
from secateur.planner import Planner


@pytest.fixture
def evaluate(data):
    return lambda m: sc.accuracy(m, data.val.x, data.val.y)


def test_sensitivity_curves_and_allocation_beat_uniform(trained_cnn, data, evaluate, tmp_path):
    method = sc.Structured(sparsity=0.0, round_to=8)
    sens = sc.sensitivity(trained_cnn, method, evaluate, example_inputs=data.example, ratios=(0.25, 0.5, 0.75),
                          progress=False)
    assert {c.key for c in sens.curves} == {"conv1", "conv2", "fc1"}
    for c in sens.curves:
        assert c.ratios == [0.0, 0.25, 0.5, 0.75] and c.quality[0] == sens.dense_quality
        assert c.macs == sorted(c.macs, reverse=True)
    assert "| group | unit |" in sens.to_markdown() and sens.plot(tmp_path / "s.png").stat().st_size > 5000
    ratios = sc.allocate(trained_cnn, sens, sc.Macs(0.5), data.example, method)
    allocated = copy.deepcopy(trained_cnn)
    result = sc.prune(allocated, sc.Structured(ratios=ratios, round_to=8), example_inputs=data.example)
    assert result.macs_after <= 0.5 * result.macs_before
    uniform = copy.deepcopy(trained_cnn)
    sc.prune(uniform, sc.Structured(target=sc.Macs(result.macs_after / result.macs_before), round_to=8),
             example_inputs=data.example)
    assert evaluate(allocated) >= evaluate(uniform)


def test_unstructured_sensitivity_is_per_layer(trained_cnn, data, evaluate):
    sens = sc.sensitivity(trained_cnn, sc.Unstructured(0.5), evaluate, example_inputs=data.example, ratios=(0.9,),
                          progress=False)
    assert [c.key for c in sens.curves] == ["conv1", "conv2", "conv3", "fc1", "fc2"]


def test_latency_target_bisects_on_the_measured_latency(trained_cnn, data, monkeypatch):
    """A stand-in latency (proportional to MACs) keeps the test deterministic; benchmarks time for real."""
    dense = count_macs(trained_cnn, (data.example,))

    def fake_latency(planner, plan, target):
        pruned = sc.apply(copy.deepcopy(planner.model), plan, remember=False)
        return 10.0 * count_macs(pruned, planner.inputs) / dense

    monkeypatch.setattr(Planner, "latency_ms", fake_latency)
    result = sc.prune(trained_cnn, sc.Structured(target=sc.Latency(ms=4.0)), example_inputs=data.example)
    assert 3.0 < 10.0 * result.macs_after / result.macs_before <= 4.0
    with pytest.raises(sc.PruningError, match="out of reach"):
        sc.prune(copy.deepcopy(trained_cnn), sc.Structured(target=sc.Latency(ms=0.001)), example_inputs=data.example)


def test_ratios_validate():
    with pytest.raises(sc.InvalidSparsityError, match="ratios"):
        sc.Structured(ratios={"conv1": 1.2})
    with pytest.raises(sc.InvalidSparsityError, match="not both"):
        sc.Structured(target=0.5, ratios={"conv1": 0.5})


def test_cli_sensitivity_writes_table_and_plot(tmp_path):
    result = CliRunner().invoke(app, ["sensitivity", "zoo:residual-cnn", "--levels", "0.5", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sensitivity.md").read_text().count("| block.0 |") == 1
    assert (tmp_path / "sensitivity.png").is_file() and (tmp_path / "sensitivity.json").is_file()
