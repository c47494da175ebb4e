"""Fuzzing (hypothesis, derandomized so every run tries the same cases): damaged or hostile manifests,
weights files, recipes and command lines end in a secateur error (exit 2 on the command line) or in
success, never in a raw traceback. Each fuzzer runs a few seconds; ``FUZZ_EXAMPLES=10`` runs ten times as
many cases, and ``FUZZ_EXPLORE=1`` draws new ones each run (to hunt, not for CI)."""

import copy
import hashlib
import json
import os
import struct

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

import secateur as sc
from secateur.cli import app
from secateur.recipe import load_recipe

SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))
EXPLORE = os.environ.get("FUZZ_EXPLORE") == "1"


def fuzz(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, derandomize=not EXPLORE, database=None,
                    suppress_health_check=list(HealthCheck))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


def paths(tree, prefix=()):
    """Every path into a JSON tree (dict keys and list indices)."""
    yield prefix
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        yield from paths(value, (*prefix, key))


def mutate(tree, path, op, value):
    tree = copy.deepcopy(tree)
    if not path:
        return value
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if op == "delete":
        del parent[path[-1]]
    elif op == "rename" and isinstance(parent, dict):
        parent[str(value)[:20]] = parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    return tree


def mutations(template):
    all_paths = list(paths(template))
    return st.tuples(st.sampled_from(all_paths), st.sampled_from(["replace", "delete", "rename"]), JSON)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 2))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pruned model saved three ways: secateur's sparse encoding, LZMA + int8, and plain safetensors."""
    root = tmp_path_factory.mktemp("fuzz")
    model = mlp()
    sc.prune(model, sc.Structured(sparsity=0.25), example_inputs=torch.randn(2, 8))
    sc.prune(model, sc.Unstructured(0.5))
    sc.save(model, root / "sparse")
    sc.save(model, root / "xz", compress="int8", entropy=True)
    sc.save(mlp(), root / "plain")
    return root


def attempt(folder) -> str:
    try:
        sc.load(folder, base=mlp)
        return "loaded"
    except sc.SecateurError:
        return "named error"


COUNTS: dict[str, dict[str, int]] = {}


def tally(fuzzer: str, outcome: str) -> None:
    """Count outcomes per fuzzer (``report`` prints them with ``-s``: the counts docs/benchmarks.md gives)."""
    COUNTS.setdefault(fuzzer, {}).setdefault(outcome, 0)
    COUNTS[fuzzer][outcome] += 1


def report(name: str, both: bool = True) -> None:
    """Print the outcomes; with ``both``, successes and errors must both occur (else the mutations never got
    past the first check, or never broke anything)."""
    print(f"\nfuzz {name}: {json.dumps(COUNTS[name])}")
    assert len(COUNTS[name]) >= (2 if both else 1), (name, COUNTS[name])


@pytest.mark.parametrize("kind", ["sparse", "xz"])
def test_fuzzed_manifests_load_or_raise_a_named_error(saved, tmp_path, kind):
    template = json.loads((saved / kind / "manifest.json").read_text())
    folder = tmp_path / "m"
    import shutil

    shutil.copytree(saved / kind, folder)

    @fuzz(150)
    @given(mutations(template))
    def check(change):
        manifest = mutate(template, *change)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        tally(f"manifest-{kind}", attempt(folder))

    check()
    report(f"manifest-{kind}")


def _refresh(folder, name, raw):
    (folder / name).write_bytes(raw)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name].update(bytes=len(raw), sha256=hashlib.sha256(raw).hexdigest())
    (folder / "manifest.json").write_text(json.dumps(manifest))


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "zero"]), st.integers(0, 10**6),
                           st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)


@pytest.mark.parametrize("kind", ["sparse", "plain"])
def test_fuzzed_weights_bytes_load_or_raise_a_named_error(saved, tmp_path, kind):
    """The manifest's size and SHA-256 are updated to match, so the bytes reach the parsers."""
    import shutil

    folder = tmp_path / "w"
    shutil.copytree(saved / kind, folder)
    name = "secateur.safetensors" if kind == "sparse" else "model.safetensors"
    original = (saved / kind / name).read_bytes()

    @fuzz(150)
    @given(EDITS)
    def check(edits):
        raw = bytearray(original)
        for op, at, data in edits:
            at %= max(len(raw), 1)
            if op == "flip" and raw:
                raw[at] ^= data[0] or 1
            elif op == "truncate":
                del raw[at:]
            elif op == "insert":
                raw[at:at] = data
            elif op == "zero":
                raw[at : at + len(data)] = bytes(len(data))
        _refresh(folder, name, bytes(raw))
        tally(f"weights-bytes-{kind}", attempt(folder))

    check()
    report(f"weights-bytes-{kind}")


HEADERS = st.dictionaries(
    st.sampled_from(["0.weight", "0.bias", "2.weight::bits", "2.weight::values", "4.weight", "x", "__metadata__"]),
    st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "U8", "I8", "BOOL", "F64", "I64", "XX"]),
                           "shape": st.lists(st.integers(-1, 70), max_size=3),
                           "data_offsets": st.lists(st.integers(-1, 5000), min_size=0, max_size=3)}),
    max_size=6)


def test_fuzzed_safetensors_headers_load_or_raise_a_named_error(saved, tmp_path):
    import shutil

    folder = tmp_path / "h"
    shutil.copytree(saved / "sparse", folder)

    @fuzz(150)
    @given(HEADERS, st.integers(0, 4096))
    def check(header, body):
        text = json.dumps(header).encode()
        _refresh(folder, "secateur.safetensors", struct.pack("<Q", len(text)) + text + bytes(body))
        tally("safetensors-header", attempt(folder))

    check()
    report("safetensors-header", both=False)


TEMPLATES = [
    {"name": "fz", "model": "zoo:digits-mlp", "data": "digits", "train": {"epochs": 1}, "report": {"runs": 2},
     "steps": [{"prune": {"method": "structured", "sparsity": 0.5, "units": ["channels"], "ratios": {"net.1": 0.3}}},
               {"finetune": {"epochs": 1, "lr": 0.001}}, {"quantize": {"mode": "int8"}},
               {"export": {"formats": ["onnx", "safetensors"]}}]},
    {"task": "language-model", "name": "lm", "model": "llm:smollm2", "calibration": {"windows": 2, "length": 8},
     "steps": [{"prune": {"method": "sparsegpt", "sparsity": 0.5, "blocksize": 64}}, {"export": {"formats": ["hf"]}}]},
]


def test_fuzzed_recipes_parse_or_raise_a_named_error(tmp_path):
    path = tmp_path / "r.yaml"

    @fuzz(200)
    @given(st.sampled_from(TEMPLATES).flatmap(lambda t: st.tuples(st.just(t), mutations(t))))
    def structured(case):
        template, change = case
        path.write_text(yaml.safe_dump(mutate(template, *change)))
        tally("recipe-structure", _parse(path))

    @fuzz(100)
    @given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
    def raw(data):
        path.write_bytes(data)
        tally("recipe-bytes", _parse(path))

    structured()
    raw()
    report("recipe-structure")
    report("recipe-bytes", both=False)


def _parse(path) -> str:
    try:
        load_recipe(path)
        return "valid"
    except sc.SecateurError:
        return "named error"


VALUES = st.sampled_from(["0", "0.5", "1", "-1", "2", "1e9", "nan", "inf", "abc", "", "heads", "channels,heads",
                          "net.0=0.5", "O=0.5", "macs=0.5", "params=2", "latency=0", "2:4", "3:2", "random:seed=x",
                          "lamp", "taylor", "global", "layer", "none", "[1]", "{}", "1,2", "a,b", "0,0"])
OPTIONS = st.sampled_from(["--method", "--sparsity", "--units", "--scope", "--round-to", "--ratios", "--target",
                           "--criterion", "--pattern", "--blocksize", "--n", "--m", "--ignore", "--profile",
                           "--dampening", "--batch-size", "--input-shape", "--weights", "--calibration", "--levels",
                           "--runs", "--base", "--bogus", "--sparsty"])
MODELS = st.sampled_from(["zoo:mlp", "zoo:nope", "zoo:", "hf:/nonexistent", "py:os:getcwd", "py:nope.mod:f",
                          "py:tests.conftest:Residual", "junk", ""])
METHODS = st.sampled_from(["structured", "unstructured", "semistructured", "magnitude", "wanda", "sparsegpt", "x"])


@st.composite
def command_lines(draw, out):
    command = draw(st.sampled_from(["analyze", "prune", "load", "inspect", "methods", "version", "sensitivity"]))
    args = [command]
    if command == "methods":
        return args + draw(st.lists(METHODS, max_size=1))
    if command in ("load", "inspect"):
        args.append(draw(st.sampled_from([str(out), str(out / "missing"), "/etc", "."])))
        if command == "load":
            args += ["--base", draw(MODELS)]
        return args
    if command == "version":
        return args
    args.append(draw(MODELS))
    if command in ("prune", "sensitivity"):
        args += ["--out", draw(st.sampled_from([str(out), str(out / "deeper"), "/proc/x", "/etc/passwd"]))]
        args += draw(st.lists(st.just("--overwrite"), max_size=1))
    args += ["--method", draw(METHODS)]
    for _ in range(draw(st.integers(0, 3))):
        args += [draw(OPTIONS), draw(VALUES | st.text(max_size=6))]
    return args


def test_fuzzed_command_lines_exit_0_or_2_never_a_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    @fuzz(120)
    @given(command_lines(tmp_path / "out"))
    def check(args):
        result = runner.invoke(app, args)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
        assert result.exit_code in (0, 2) and "Traceback" not in result.output, (args, result.output)
        tally("command-line", f"exit {result.exit_code}")

    check()
    report("command-line")
