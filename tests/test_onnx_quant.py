import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import secateur as sc
from tests.conftest import Residual, randomize_bn

X = torch.randn(6, 3, 8, 8)


@pytest.mark.parametrize("prune", [None, "structured", "unstructured"])
def test_onnx_output_matches_torch(tmp_path, prune):
    model = randomize_bn(Residual())
    if prune == "structured":
        sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=X)
    elif prune == "unstructured":
        sc.prune(model, sc.Unstructured(0.7))
    onnx_model = sc.OnnxModel(sc.export_onnx(model, tmp_path / "m.onnx", X[:1]))
    torch.testing.assert_close(onnx_model(X), model(X), atol=1e-4, rtol=1e-4)  # batch 6 on a batch-1 export
    assert not list(tmp_path.glob(".*tmp"))


def test_quantized_digits_cnn_is_smaller_and_accurate(tmp_path, trained_cnn, data):
    fp32 = sc.export_onnx(trained_cnn, tmp_path / "fp32.onnx", data.example)
    calibration = [data.train.x[i : i + 64] for i in range(0, 256, 64)]
    q = sc.quantize(trained_cnn, tmp_path / "int8.onnx", example_inputs=data.example, calibration=calibration)
    assert q.file_bytes < 0.35 * fp32.stat().st_size
    dense_acc = sc.accuracy(trained_cnn, data.test.x, data.test.y)
    assert sc.accuracy(q, data.test.x, data.test.y) >= dense_acc - 0.02


def _int8_weights(path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    return [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]


@pytest.mark.parametrize("static", [True, False])
def test_zeros_stay_zero_through_int8(tmp_path, static):
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    sc.prune(model, sc.Unstructured(0.8))
    x = torch.randn(64, 32)
    q = sc.quantize(model, tmp_path / "q.onnx", example_inputs=x[:2], calibration=[x] if static else None)
    weights = sorted(_int8_weights(q.path), key=lambda a: a.size)
    zeros = [int((w == 0).sum()) for w in weights if w.size in (32 * 64, 64 * 10)]
    assert zeros and all(z >= int(0.8 * n) for z, n in zip(zeros, (64 * 10, 32 * 64), strict=True))
    torch.testing.assert_close(q(x), model(x), atol=0.15, rtol=0.1)


def test_quantize_missing_file_raises(tmp_path):
    with pytest.raises(sc.ModelFileError, match="export_onnx"):
        sc.quantize(tmp_path / "none.onnx", tmp_path / "q.onnx")


def test_profile_counts_and_times():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    p = sc.profile(model, torch.randn(8, 16), runs=20)
    assert p.params == 16 * 32 + 32 + 32 * 4 + 4 and p.macs == 16 * 32 + 32 * 4 and p.batch_size == 8
    assert p.file_bytes > 4 * p.params and set(p.latency_ms) == {"torch", "onnxruntime"}
    assert all(v > 0 for v in p.latency_ms.values())


@pytest.mark.parametrize("make", ["bert", "llama"])
def test_text_models_export_with_dynamic_batch_and_sequence(make, tmp_path):
    from secateur.zoo import hf

    model = getattr(hf, make)().eval()
    ids = torch.randint(0, 100, (2, 8))
    onnx = sc.OnnxModel(sc.export_onnx(model, tmp_path / "m.onnx", {"input_ids": ids,
                                                                     "attention_mask": torch.ones_like(ids)}))
    assert onnx.input_names == ["input_ids", "attention_mask"]
    for batch, length in ((1, 5), (3, 13)):
        x = torch.randint(0, 100, (batch, length))
        with torch.no_grad():
            expected = model(input_ids=x, attention_mask=torch.ones_like(x))[0]
        got = onnx(input_ids=x, attention_mask=torch.ones_like(x))
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_config_asking_for_a_cache_exports_when_forward_takes_it_through_kwargs(tmp_path):
    """BertForSequenceClassification's config says use_cache=True but its forward has no use_cache parameter:
    passing one made torch.export refuse the dynamic shapes (``sc.profile`` of a tokenizer dict failed)."""
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=4, intermediate_size=64)).eval()
    assert model.config.use_cache
    ids = torch.randint(0, 100, (2, 8))
    onnx = sc.OnnxModel(sc.export_onnx(model, tmp_path / "m.onnx", {"input_ids": ids}))
    x = torch.randint(0, 100, (3, 11))
    with torch.no_grad():
        torch.testing.assert_close(onnx(input_ids=x), model(input_ids=x).logits, atol=1e-4, rtol=1e-4)
    assert model.config.use_cache  # the copy's config was changed, not the user's
