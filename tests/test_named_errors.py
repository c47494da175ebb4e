"""Issue 9: every parameter validated, nothing changed silently, and named errors instead of raw tracebacks
(each test failed on 0.1)."""

import time

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import secateur as sc
from secateur.cli import app
from secateur.masks import find_mask
from secateur.recipe import load_recipe, parse_recipe
from tests.test_files import TINY, mlp, refresh, same, values

# -- parameters not validated -----------------------------------------------------------------------------------

@pytest.mark.parametrize("step", [{"method": "unstructured"}, {"method": "unstructured", "sparsity": 0.0},
                                  {"method": "structured", "sparsity": 0}, {"method": "wanda", "sparsity": 0}])
def test_a_recipe_step_that_prunes_nothing_is_an_error(step):
    with pytest.raises(sc.RecipeError, match="sparsity"):
        parse_recipe({**TINY, "steps": [{"prune": step}]})


def test_ratio_keys_must_name_groups_and_block_sizes_be_positive():
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(sc.InvalidParameterError, match="'O', which is not a prunable group"):
        sc.prune(net, sc.Structured(ratios={"O": 0.5}), example_inputs=torch.randn(1, 8))
    with pytest.raises(sc.InvalidParameterError, match="blocksize=-5"):
        sc.SparseGPT(0.5, blocksize=-5)


def test_ties_at_the_threshold_prune_exactly_the_requested_count():
    grid = torch.round(torch.randn(64, 96) * 3) / 8  # a 4-bit-like grid: many equal magnitudes
    for method in (sc.Magnitude(0.5), sc.Wanda(0.5)):
        stat = method.new_statistic(96)
        if stat is not None:
            stat.update(torch.ones(4, 96))
        _, keep = method.prune_weight(grid, stat, 0.5)
        assert int(keep.sum()) == grid.numel() // 2
    net = nn.Sequential(nn.Linear(96, 64))
    with torch.no_grad():
        net[0].weight.copy_(grid)
    sc.prune(net, sc.Unstructured(0.5))
    assert int((net[0].weight != 0).sum()) == grid.numel() // 2


# -- silent changes ---------------------------------------------------------------------------------------------

def test_int8_storage_keeps_the_mask_it_was_given(tmp_path):
    net = nn.Sequential(nn.Linear(16, 16))
    sc.prune(net, sc.Unstructured(0.3))
    with torch.no_grad():
        net[0].parametrizations.weight.original.mul_(1e-4)
        net[0].parametrizations.weight.original[:, 0] = 1.0  # with one scale per row, the rest rounds to zero
    sc.save(net, tmp_path, compress="int8")
    loaded = sc.load(tmp_path, base=lambda: nn.Sequential(nn.Linear(16, 16)))
    assert torch.equal(find_mask(loaded[0]).mask, find_mask(net[0]).mask)
    assert int(find_mask(loaded[0]).mask.sum()) == 16 * 16 - int(0.3 * 256)


@pytest.mark.parametrize("method", [sc.Structured(sparsity=0.5), sc.Unstructured(0.5), sc.Wanda(0.5)])
def test_rollback_restores_data_into_the_same_parameter_objects(method, monkeypatch):
    from secateur import handlers
    from secateur.llm import engine
    from secateur.zoo.hf import llama

    ids = torch.randint(0, 100, (2, 8))
    model, x = (llama().eval(), {"input_ids": ids}) if isinstance(method, sc.Wanda) else (mlp(), torch.randn(2, 8))
    params, before = list(model.parameters()), values(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if isinstance(method, sc.Wanda):  # fail inside the engine, after some layers were updated in place
        real, calls = engine.prune_layer, []

        def fails_late(*args):
            calls.append(1)
            if len(calls) == 10:
                raise RuntimeError("late")
            real(*args)
        monkeypatch.setattr(engine, "prune_layer", fails_late)
    else:  # fail after the handler changed the model
        key = next(k for k in type(method).__mro__ if k in handlers.BUILTIN)
        real = handlers.BUILTIN[key]
        monkeypatch.setitem(handlers.BUILTIN, key, lambda *a: (real(*a), (_ for _ in ()).throw(RuntimeError("late"))))
    with pytest.raises(RuntimeError, match="late"):
        sc.prune(model, method, example_inputs=None if isinstance(method, sc.Wanda) else x, calibration=ids,
                 progress=False)
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True)) and same(values(model), before)
    out = model(**x).logits if isinstance(x, dict) else model(x)
    out.square().sum().backward()
    optimizer.step()  # made before the failed prune, it still trains the model
    assert not torch.equal(params[-1], before[list(before)[-1]])


# -- named errors, never raw tracebacks -------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["prune", "zoo:mlp", "--out", "o", "--units", "foo"], "'foo' is not one of"),
    (["prune", "zoo:mlp", "--out", "o", "--scope", "bad"], "'bad' is not one of 'layer', 'global'"),
    (["prune", "zoo:mlp", "--out", "o", "--round-to", "0"], "round_to=0 must be a positive integer"),
    (["analyze", "py:tests.conftest:Residual", "--input-shape", "a,b"], "input shape 'a,b'"),
    (["profile", "zoo:mlp", "--runs", "0"], "--runs"),
    (["prune", "zoo:mlp", "--out", "o", "--ratios", "abc"], "'abc' is not NAME=VALUE"),
    (["inspect", "."], "holds no saved model"),
    (["prune", "zoo:mlp"], "Missing option '--out'"),
    (["prnue", "zoo:mlp"], "No such command 'prnue'"),
])
def test_cli_option_mistakes_exit_2_with_one_line(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit) and result.output.count("\n") == 1


@pytest.mark.parametrize("damage", ["truncate", "lzma", "json"])
def test_damaged_files_are_model_file_errors(tmp_path, damage):
    sc.save(mlp(), tmp_path, entropy=damage == "lzma")
    name = "model.safetensors.xz" if damage == "lzma" else "model.safetensors"
    if damage == "json":
        (tmp_path / "manifest.json").write_text("{not json")
    else:
        raw = (tmp_path / name).read_bytes()
        damaged = raw[: len(raw) // 2] if damage == "truncate" else raw[:12] + b"\0" * 40 + raw[52:]
        (tmp_path / name).write_bytes(damaged)
        refresh(tmp_path, name)
    with pytest.raises(sc.ModelFileError):
        sc.load(tmp_path, base=mlp)


def test_criteria_without_what_they_need_are_named_errors():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(sc.InputError, match="holds no batch"):
        sc.prune(net, sc.Unstructured(0.5, criterion="taylor"), calibration=[])
    with pytest.raises(sc.PruningError, match="needs calibration"):
        sc.prune(net, sc.Unstructured(0.5, criterion="taylor"))
    net[0].weight.requires_grad_(False)
    batch = [(torch.randn(4, 4), torch.randint(0, 2, (4,)))]
    with pytest.raises(sc.PruningError, match="does not require grad"):
        sc.prune(net, sc.Unstructured(0.5, criterion="taylor"), calibration=batch)
    with pytest.raises(sc.InvalidParameterError, match="target"):
        sc.Structured(target="0.5")


def test_recipe_encoding_nesting_and_size_are_checked_before_parsing(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(sc.RecipeError, match="not UTF-8"):
        load_recipe(tmp_path / "latin1.yaml")
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(sc.RecipeError, match="nested too deeply"):
        load_recipe(tmp_path / "deep.yaml")
    (tmp_path / "big.yaml").write_text("# " + "x" * (12 << 20))
    start = time.perf_counter()
    with pytest.raises(sc.RecipeError, match="at most"):
        load_recipe(tmp_path / "big.yaml")
    assert time.perf_counter() - start < 1
