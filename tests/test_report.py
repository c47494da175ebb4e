"""The report a recipe run writes: an 80-column terminal table, latency with its spread and warnings,
and a self-contained HTML page that a real browser renders without errors."""

import json
import shutil

import pytest

from secateur.pipeline import run_recipe
from secateur.recipe import parse_recipe
from secateur.report import table, to_html, write_report
from secateur.report.text import warnings

RECIPE = {"name": "html", "model": "zoo:digits-cnn", "data": "digits", "train": {"epochs": 1},
          "steps": [{"sensitivity": {"levels": [0.5]}}, {"prune": {"method": "structured", "target": {"macs": 0.5}}},
                    {"finetune": {"epochs": 1}}],
          "report": {"batch_size": 32, "runs": 5}}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    data = run_recipe(parse_recipe(RECIPE), out, progress=False)
    write_report(data, out)
    return data, out


def test_terminal_table_fits_80_columns(report):
    data, _ = report
    text = table(data)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert [line.split()[0] for line in text.splitlines()[3:]] == ["dense", "pruned", "finetuned"]


def test_latency_carries_its_spread_and_noise_is_called_out(report):
    data, _ = report
    for stage in data["stages"]:
        p25, p75 = stage["metrics"]["latency_iqr_ms"]["torch"]
        assert p25 <= stage["metrics"]["latency_ms"]["torch"] <= p75
    noisy = json.loads(json.dumps(data))
    noisy["stages"][1]["metrics"]["latency_ms"]["torch"] = noisy["stages"][0]["metrics"]["latency_ms"]["torch"]
    noisy["stages"][1]["metrics"]["latency_iqr_ms"]["torch"] = [0.0, 1e9]
    assert any("pruned vs dense in torch" in w for w in warnings(noisy))


def test_html_is_self_contained_with_every_section(report):
    data, out = report
    page = (out / "report.html").read_text()
    assert page == to_html(data)
    assert page.count("data:image/png;base64,") == 4  # stages, sensitivity, units kept, importance
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_html_renders_in_headless_chromium(report, tmp_path):
    from playwright.sync_api import sync_playwright

    _, out = report
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "report.html").as_uri())
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        shot = page.screenshot(full_page=True, path=str(tmp_path / "report.png"))
        browser.close()
    assert errors == [] and len(widths) == 4 and min(widths) > 100
    assert len(shot) > 50_000
