"""Heavy tests on the real SmolLM2-135M (run with ``make test-all`` or ``pytest -m slow``)."""

import pytest
import torch

import secateur as sc
from secateur.llm import load_corpus, perplexity, windows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from secateur.zoo.llm import smollm2

    model, tokenizer = smollm2()
    ids = tokenizer(load_corpus()[:200_000], return_tensors="pt").input_ids[0]
    return model, windows(ids, 128, 8), windows(ids, 128, 4, start=128 * 8)


def test_wanda_on_the_real_smollm2_keeps_perplexity_and_sparsity(smollm2):
    model, calibration, held_out = smollm2
    dense = perplexity(model, held_out, progress=False)
    result = sc.prune(model, sc.Wanda(0.5, batch_size=2), calibration=calibration, progress=False)
    assert len(result.plan.masks) == 30 * 7 and set(result.plan.sparsity().values()) == {0.5}
    assert perplexity(model, held_out, progress=False) < 2.5 * dense
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model(input_ids=calibration[:2], labels=calibration[:2]).loss.backward()
        opt.step()
    layer = model.model.layers[10].mlp.down_proj
    assert float((layer.weight == 0).float().mean()) == 0.5
