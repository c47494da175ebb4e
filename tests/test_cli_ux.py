"""The command line as a person meets it: it starts without torch, fits an 80-column terminal, names the
extra to install when one is missing, and the README's command lines work."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from secateur.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_help_does_not_import_torch():
    code = "import sys; from secateur.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("args", [["analyze", "zoo:hf-llama-gqa"], ["analyze", "zoo:hf-bert", "--sparsity", "0.5"],
                                  ["sensitivity", "zoo:residual-cnn", "--out", "{tmp}/s"], ["methods"]])
def test_output_fits_80_columns(args, tmp_path):
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_a_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the hf extra were not installed
    result = CliRunner().invoke(app, ["analyze", "zoo:hf-llama-gqa"])
    assert result.exit_code == 2 and "pip install 'secateur[hf]'" in result.output


def test_the_readme_command_lines_work(tmp_path, monkeypatch):
    block = re.search(r"## Command line.*?```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    lines = [line.split("#")[0].split()[1:] for line in block.splitlines() if line.strip()]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for args in lines:
        if args[0] in ("run", "demo"):  # whole recipes: tests/test_recipe.py runs one end to end
            continue
        result = CliRunner().invoke(app, args + (["--quiet"] if args[0] in ("prune", "sensitivity") else []))
        assert result.exit_code == 0, (args, result.output)
