"""Every method and every criterion in the registries, given the same options through Python, a YAML
recipe and the command line, makes the same plan (``Plan.to_dict`` equal). New methods and criteria
are picked up by walking the registries; a method needs an entry in OPTIONS only if it has required
options or needs a different model."""

import json
import typing

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import secateur as sc
from secateur.cli import app
from secateur.criteria import CRITERIA
from secateur.methods import METHODS, OneShot
from secateur.recipe import load_recipe
from secateur.resolve import resolve

OPTIONS = {
    "structured": {"sparsity": 0.5, "scope": "global", "round_to": 2, "units": ["channels"]},
    "unstructured": {"sparsity": 0.6, "ignore": ["net.4"]},
    "semistructured": {"n": 2, "m": 4},
    "magnitude": {"sparsity": 0.5, "ignore": ["lm_head", "*embed*", "*.o_proj"]},
    "wanda": {"sparsity": 0.4, "pattern": "unstructured"},
    "sparsegpt": {"sparsity": 0.5, "blocksize": 16, "dampening": 0.05, "batch_size": 2},
}


def _criterion_cases(name: str) -> list[object]:
    """Criteria a method takes: every registered one it accepts (a seeded dict for random)."""
    if "criterion" not in typing.get_type_hints(METHODS[name]):
        return [None]
    weights_only = name != "structured"
    return [({"name": c, "seed": 0} if c == "random" else c) for c, cls in sorted(CRITERIA.items())
            if not (weights_only and cls.units_only)]


CASES = [(m, c) for m in sorted(METHODS) for c in _criterion_cases(m)]


def _cli_value(value: object) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return f"{value['name']}:" + ",".join(f"{k}={v}" for k, v in value.items() if k != "name")
    return str(value)


def _python_value(value: object) -> object:
    """How a Python caller writes an option: tuples, and a criterion object for one with options."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return CRITERIA[value["name"]](**{k: v for k, v in value.items() if k != "name"})
    return value


def _blocks_only(criterion: object) -> bool:
    return isinstance(criterion, str) and CRITERIA[criterion].blocks_only


def _setup(name: str, tmp_path, language_model: bool = False):
    """(model spec, calibration file, calibration as Python passes it)."""
    g = torch.Generator().manual_seed(0)
    if issubclass(METHODS[name], OneShot) or language_model:
        ids = torch.randint(0, 100, (4, 12), generator=g)
        np.savez(tmp_path / "cal.npz", input_ids=ids.numpy())
        return "zoo:hf-llama-gqa", ids
    x, y = torch.randn(64, 20, generator=g), torch.randint(0, 5, (64,), generator=g)
    np.savez(tmp_path / "cal.npz", x=x.numpy(), y=y.numpy())
    return "zoo:mlp", [(x[:32], y[:32]), (x[32:], y[32:])]


def _prune(spec: str, method: sc.Method, calibration) -> dict:
    torch.manual_seed(0)
    r = resolve(spec)
    return sc.prune(r.model, method, example_inputs=r.example_inputs, calibration=calibration,
                    progress=False).plan.to_dict()


IDS = [f"{m}-{c if isinstance(c, str) else 'x'}" for m, c in CASES]


@pytest.mark.parametrize(("name", "criterion"), CASES, ids=IDS)
def test_python_yaml_and_cli_make_the_same_plan(name, criterion, tmp_path):
    options = dict(OPTIONS.get(name, {}))
    if _blocks_only(criterion):  # depth criteria: a stack of blocks to choose from
        options = {"sparsity": 0.5, "units": ["blocks"]}
    if criterion is not None:
        options["criterion"] = criterion
    spec, calibration = _setup(name, tmp_path, language_model=_blocks_only(criterion))
    python = METHODS[name](**{k: _python_value(v) for k, v in options.items()})
    recipe = {"name": "r", "model": spec, "train": None, "steps": [{"prune": {"method": name, **options}}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    from_yaml = load_recipe(tmp_path / "r.yaml").steps[0].prune.method
    assert from_yaml == python and from_yaml.to_dict() == python.to_dict()

    args = ["prune", spec, "--out", str(tmp_path / "out"), "--method", name, "--calibration", str(tmp_path / "cal.npz"),
            "--quiet"]
    args += [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", _cli_value(v))]
    torch.manual_seed(0)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "prune.json").read_text())
    assert report["method"] == python.to_dict()
    plan = _prune(spec, python, calibration)
    assert report["plan"] == plan == _prune(spec, from_yaml, calibration)
    assert plan["cuts"] or plan["masks"] or plan["blocks"]
