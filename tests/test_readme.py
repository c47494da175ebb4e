"""The README's Python example must work as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    # hidden 256 -> 128 neurons: 64*128 + 128 + 128*10 + 10 parameters remain
    assert "params 19,210 -> 9,610" in capsys.readouterr().out
    assert (tmp_path / "out" / "net" / "manifest.json").is_file()
