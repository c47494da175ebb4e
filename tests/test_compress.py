import pytest
import safetensors.torch
import torch
from torch import nn

import secateur as sc
from secateur.compress import dequantize_rows, quantize_rows


def _sparse_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    sc.prune(model, sc.Unstructured(0.9))
    return model


def _make() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))


def _bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if ".safetensors" in p.name)


@pytest.mark.parametrize("entropy", [False, True])
def test_bitmask_storage_round_trips_exactly(tmp_path, entropy):
    model = _sparse_mlp()
    sc.save(model, tmp_path, entropy=entropy)
    loaded = sc.load(tmp_path, base=_make)
    for a, b in ((loaded[0], model[0]), (loaded[2], model[2])):  # effective (masked) weights, bit for bit
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_int8_storage_is_exactly_the_quantized_weights_and_keeps_zeros(tmp_path):
    model = _sparse_mlp()
    sc.save(model, tmp_path, compress="int8", entropy=True)
    loaded = sc.load(tmp_path, base=_make)
    for layer, original in ((loaded[0], model[0]), (loaded[2], model[2])):
        expected = dequantize_rows(*quantize_rows(original.weight.detach()))
        assert torch.equal(layer.weight.detach(), expected)
        assert torch.equal(layer.weight == 0, original.weight == 0)
        assert torch.equal(layer.bias, original.bias.detach().half().float())  # small vectors kept as fp16
    x = torch.randn(8, 64)
    torch.testing.assert_close(loaded(x), model(x), atol=0.05, rtol=0.05)


def test_each_stage_is_smaller(tmp_path):
    model = _sparse_mlp()
    sizes = {"plain": len(safetensors.torch.save(_make().state_dict()))}  # the dense fp32 file
    for name, kw in {"bitmask": {}, "int8": {"compress": "int8"},
                     "int8+xz": {"compress": "int8", "entropy": True}}.items():
        sc.save(model, tmp_path / name, **kw)
        sizes[name] = _bytes(tmp_path / name)
    assert sizes["plain"] > sizes["bitmask"] > sizes["int8"] > sizes["int8+xz"]
    assert sizes["plain"] / sizes["int8+xz"] > 15  # 90% sparse: bitmask + int8 + LZMA


def test_resaving_in_another_format_leaves_no_stale_weights(tmp_path):
    model = _sparse_mlp()
    sc.save(model, tmp_path, compress="int8", entropy=True)
    sc.save(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "secateur.safetensors"]
    assert torch.equal(sc.load(tmp_path, base=_make)[0].weight, model[0].weight)
