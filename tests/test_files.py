"""Issue 9: files and runs a user can trust. One test per defect found on 0.1 (each failed there)."""

import hashlib
import json
import lzma
import multiprocessing
import time

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

import secateur as sc
from secateur.cli import app
from secateur.masks import find_mask
from secateur.recipe import parse_recipe

TINY = {"name": "tiny", "model": "zoo:digits-mlp", "train": {"epochs": 1}, "report": {"runs": 2, "plot": False},
        "steps": [{"prune": {"method": "unstructured", "sparsity": 0.5}}, {"export": {"formats": ["safetensors"]}}]}


def mlp(layers: int = 3) -> nn.Sequential:
    torch.manual_seed(layers)
    parts = [m for _ in range(layers) for m in (nn.Linear(8, 8), nn.ReLU())]
    return nn.Sequential(*parts, nn.Linear(8, 2))


def values(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def edit_manifest(folder, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def refresh(folder, name: str) -> None:
    """Make the manifest's size and SHA-256 of ``name`` match the file again (a consistent, hostile edit)."""
    raw = (folder / name).read_bytes()

    def change(m):
        m["files"][name].update(bytes=len(raw), sha256=hashlib.sha256(raw).hexdigest())
    edit_manifest(folder, change)


# -- a recipe writes outside runs/ ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../somewhere", "/tmp/abs", "a/b", "..", ""])
def test_a_recipe_name_is_a_plain_name(name):
    with pytest.raises(sc.RecipeError, match="plain name"):
        parse_recipe({**TINY, "name": name})


def test_a_run_writes_only_inside_its_output_folder(tmp_path, monkeypatch):
    (tmp_path / "report.md").write_text("mine")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "name": "../.."}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(recipe), "--quiet"])
    assert result.exit_code == 2 and "plain name" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "report.md"]
    recipe.write_text(yaml.safe_dump(TINY))
    assert CliRunner().invoke(app, ["run", str(recipe), "--quiet"]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "report.md", "runs"]
    assert (tmp_path / "report.md").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny"]  # no lock or staging left beside it


# -- saving into an existing folder -----------------------------------------------------------------------------

def test_prune_refuses_a_folder_it_did_not_write_and_overwrite_keeps_other_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors.xz").write_text("keep")
    result = CliRunner().invoke(app, ["prune", "zoo:digits-mlp", "--out", str(out), "--sparsity", "0.5"])
    assert result.exit_code == 2 and "did not write" in result.output and "--overwrite" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors.xz"]
    result = CliRunner().invoke(app, ["prune", "zoo:digits-mlp", "--out", str(out), "--sparsity", "0.5",
                                      "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors.xz").read_text() == "keep"
    assert sc.load(out, base=sc.zoo.DigitsMLP).net[1].out_features == 256
    sc.save(nn.Linear(2, 2), out)  # the folder is secateur's now: a new save replaces its files, keeps the user's
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors", "model.safetensors.xz"]


def test_save_never_deletes_files_its_manifest_does_not_list(tmp_path):
    sc.save(mlp(), tmp_path / "m")
    (tmp_path / "m" / "notes.txt").write_text("mine")
    sc.save(mlp(2), tmp_path / "m")
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"
    (tmp_path / "m" / "model.safetensors").unlink()
    (tmp_path / "m" / "model.safetensors").write_text("not yours")  # a name secateur writes, but not its file now
    edit_manifest(tmp_path / "m", lambda m: m["files"].pop("model.safetensors"))
    with pytest.raises(sc.OutputExistsError, match="model.safetensors"):
        sc.save(mlp(), tmp_path / "m")


def test_an_interrupted_run_leaves_no_earlier_report_claiming_success(tmp_path, monkeypatch):
    from secateur import pipeline

    out = tmp_path / "out"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    assert CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--quiet"]).exit_code == 0
    assert (out / "report.json").is_file() and not (out / "INCOMPLETE").exists()

    def interrupted(self, step):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.Run, "do_prune", interrupted)
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--quiet"])
    assert result.exit_code == 130  # Ctrl-C
    assert not (out / "report.json").exists() and not (out / "model").exists() and (out / "INCOMPLETE").is_file()
    record = json.loads((out / "secateur-run.json").read_text())
    assert record["status"] == "failed" and set(record["files"]) - {"tensorboard/"} == {"stages/dense.onnx"}


# -- one save's manifest with another's weights -----------------------------------------------------------------

def test_ctrl_c_between_weights_and_manifest_leaves_the_previous_save(tmp_path, monkeypatch):
    old, new = mlp(), mlp()
    sc.prune(new, sc.Unstructured(0.5))
    sc.save(old, tmp_path)
    real = json.dumps

    def interrupt(obj, *args, **kwargs):
        if isinstance(obj, dict) and str(obj.get("format", "")).startswith("secateur.v"):
            raise KeyboardInterrupt  # after the weights were written, before the manifest
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", interrupt)
    with pytest.raises(KeyboardInterrupt):
        sc.save(new, tmp_path)
    monkeypatch.setattr(json, "dumps", real)
    assert same(values(sc.load(tmp_path, base=mlp)), values(old))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}")) == []


def _save_slowly(folder, seed, barrier, queue):
    from secateur.io import fs

    torch.manual_seed(seed)
    model = mlp()
    fs.FAULTS.hook = lambda op, path: time.sleep(0.05) if op == "create" else None
    barrier.wait()
    try:
        sc.save(model, folder)
        queue.put((seed, "saved"))
    except sc.SecateurError as err:
        queue.put((seed, type(err).__name__))


def test_two_processes_saving_one_folder_one_wins_the_other_gets_a_named_error(tmp_path):
    ctx = multiprocessing.get_context("fork")
    outcomes = []
    for trial in range(4):
        folder = tmp_path / f"t{trial}"
        barrier, queue = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_save_slowly, args=(folder, seed, barrier, queue)) for seed in (1, 2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        results = dict(queue.get(timeout=5) for _ in procs)
        outcomes.append(sorted(results.values()))
        winners = [seed for seed, what in results.items() if what == "saved"]
        torch.manual_seed(winners[-1])
        assert len(winners) == 1 and same(values(sc.load(folder, base=mlp)), values(mlp()))
    assert outcomes == [["FolderLockedError", "saved"]] * 4


# -- a failed load into a base instance -------------------------------------------------------------------------

def test_a_failed_load_leaves_the_base_exactly_as_it_was(tmp_path):
    saved = mlp(3)
    sc.prune(saved, sc.Structured(sparsity=0.5), example_inputs=torch.randn(2, 8))
    sc.save(saved, tmp_path)
    base = mlp(2)
    objects, before = [id(p) for p in base.parameters()], values(base)
    with pytest.raises(sc.ModelFileError, match="does not (apply to|fit)"):
        sc.load(tmp_path, base=base)
    assert objects == [id(p) for p in base.parameters()] and same(values(base), before)


def test_a_load_that_fails_after_copying_weights_restores_their_values(tmp_path, monkeypatch):
    from secateur.io import loading

    saved = mlp()
    sc.prune(saved, sc.Unstructured(0.5))
    sc.save(saved, tmp_path)
    base = mlp()
    before = values(base)
    monkeypatch.setattr(loading, "apply_mask", lambda *a: (_ for _ in ()).throw(RuntimeError("late failure")))
    with pytest.raises(RuntimeError, match="late failure"):
        sc.load(tmp_path, base=base)
    assert same(values(base), before) and find_mask(base[0]) is None


# -- loads are verified -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["../b/model.safetensors", "../../../../etc/passwd", "/etc/passwd"])
def test_the_manifest_cannot_point_outside_the_folder(tmp_path, target):
    sc.save(mlp(), tmp_path / "a")
    sc.save(mlp(2), tmp_path / "b")

    def change(m):
        m["files"][target] = m["files"].pop("model.safetensors")
        m["weights"] = target
    edit_manifest(tmp_path / "a", change)
    with pytest.raises(sc.ModelFileError, match="not a plain file name inside the folder"):
        sc.load(tmp_path / "a", base=mlp)


def test_a_link_inside_the_folder_is_not_followed(tmp_path):
    sc.save(mlp(), tmp_path / "a")
    sc.save(mlp(), tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").unlink()
    (tmp_path / "a" / "model.safetensors").symlink_to(tmp_path / "b" / "model.safetensors")
    with pytest.raises(sc.ModelFileError, match="never links"):
        sc.load(tmp_path / "a", base=mlp)


def test_flipped_bytes_and_a_moved_bitmask_bit_are_caught(tmp_path):
    model = mlp()
    sc.prune(model, sc.Unstructured(0.7))
    sc.save(model, tmp_path)
    path = tmp_path / "secateur.safetensors"
    raw = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    for i in range(100):
        raw[header + (i * 7) % (len(raw) - header)] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(sc.ModelFileError, match="SHA-256"):
        sc.load(tmp_path, base=mlp)
    sc.save(model, tmp_path)
    stored = sc.io.state.parse_tensors(path.read_bytes(), "x")
    bits = stored["0.weight::bits"]
    on, off = (bits != 0).nonzero()[0, 0].item(), (bits != 255).nonzero()[0, 0].item()
    moved = bits.clone()
    moved[on] = moved[on] & (moved[on] - 1)  # clear one set bit ...
    moved[off] = moved[off] | ((moved[off] ^ 255) & -(moved[off] ^ 255) & 255)  # ... and set one clear bit
    from safetensors.torch import save as to_bytes

    path.write_bytes(to_bytes({**stored, "0.weight::bits": moved}))
    with pytest.raises(sc.ModelFileError, match="SHA-256"):
        sc.load(tmp_path, base=mlp)


class Tied(nn.Module):
    def __init__(self, tie: bool = True):
        super().__init__()
        self.emb, self.head = nn.Embedding(20, 8), nn.Linear(8, 20, bias=False)
        if tie:
            self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(self.emb(ids))


def test_a_tensor_listed_as_tied_is_checked_against_its_source(tmp_path):
    sc.save(Tied(), tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["tied"] == {"head.weight": "emb.weight"}
    base = Tied(tie=False)
    before = values(base)
    with pytest.raises(sc.ModelFileError, match="keeps them separate"):
        sc.load(tmp_path, base=base)
    assert same(values(base), before)


def test_a_tensor_missing_from_the_file_is_named(tmp_path):
    sc.save(mlp(), tmp_path)
    from safetensors.torch import load_file, save_file

    stored = load_file(tmp_path / "model.safetensors")
    del stored["2.weight"]
    save_file(stored, tmp_path / "model.safetensors")
    refresh(tmp_path, "model.safetensors")
    with pytest.raises(sc.ModelFileError, match=r"missing \['2.weight'\]"):
        sc.load(tmp_path, base=mlp)


def test_decompression_is_bounded_by_the_manifest(tmp_path):
    import tracemalloc

    sc.save(mlp(), tmp_path, entropy=True)
    (tmp_path / "model.safetensors.xz").write_bytes(lzma.compress(bytes(64 << 20)))  # 64 MiB of zeros, ~10 KiB
    refresh(tmp_path, "model.safetensors.xz")
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(sc.ModelFileError, match="expands beyond"):
        sc.load(tmp_path, base=mlp)
    peak, seconds = tracemalloc.get_traced_memory()[1], time.perf_counter() - start
    tracemalloc.stop()
    assert peak < 16 << 20 and seconds < 2  # the decoder's own buffers (8 MiB), not the 64 MiB
