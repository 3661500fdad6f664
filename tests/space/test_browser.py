"""A real browser on the deployed Space: Playwright driving Debian's chromium (`apt-get install chromium`).
Loads the page, submits a text, waits for the views, checks they rendered, and that the page fetched
nothing from outside 127.0.0.1. Skips when chromium is not installed."""

from __future__ import annotations

import shutil
from urllib.parse import urlparse

import pytest

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (`apt-get install -y chromium`); Playwright cannot download "
               "browsers here, so the browser tests need the system one"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # gradio's own pandas calls, in-process launch
]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, space_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.outside_requests = []
    page.page_errors = []

    def record(request):
        url = urlparse(request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in ("127.0.0.1", "localhost"):
            page.outside_requests.append(request.url)

    page.on("request", record)
    page.on("pageerror", lambda error: page.page_errors.append(str(error)))
    # Anything not on loopback is refused, so a forgotten CDN asset fails loudly instead of hanging.
    page.route(lambda url: urlparse(url).hostname not in ("127.0.0.1", "localhost"), lambda route: route.abort())
    page.goto(space_server.url, wait_until="load")
    page.wait_for_selector("#trl-analyse", timeout=30_000)
    yield page
    context.close()


def _drawn(page, selector):
    """The on-screen box of the element at selector, asserting it is really drawn (not just in the DOM)."""
    box = page.locator(selector).first.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100, f"{selector} is not drawn: {box}"
    return box


def test_analyse_renders_coloured_tokens_heatmaps_and_bars(page, tmp_path):
    page.fill("#trl-text textarea", "The Senate met today. def add(a, b): return a + b. 12 + 30 = 42.")
    page.click("#trl-analyse")
    page.wait_for_selector("#trl-tokens .trl-tok[data-expert]", timeout=60_000)
    page.wait_for_selector("#trl-token-heatmap img[src^='data:image/png']", timeout=60_000)
    page.wait_for_selector("#trl-entropy .vega-embed svg", timeout=30_000)

    tokens = page.locator("#trl-tokens .trl-tok[data-expert]")
    count = tokens.count()
    assert count > 20
    first = tokens.first
    assert "top expert" in first.get_attribute("title")  # the weights on hover
    colours = {page.locator("#trl-tokens .trl-tok[data-expert]").nth(i).evaluate(
        "e => getComputedStyle(e).backgroundColor") for i in range(count)}
    assert all(c.startswith("rgba(") for c in colours) and len(colours) > 1

    for heatmap in ("#trl-token-heatmap img", "#trl-layer-heatmap img"):  # gr.Plot: the matplotlib figure
        _drawn(page, heatmap)
        assert page.locator(heatmap).evaluate("img => img.complete && img.naturalWidth > 200")
    # gr.BarPlot (Vega): one bar per token, one per expert
    page.wait_for_function(f"() => document.querySelectorAll('#trl-entropy .mark-rect path').length === {count}")
    assert page.locator("#trl-load .mark-rect path").count() == 4
    _drawn(page, "#trl-entropy .vega-embed svg")
    assert page.locator("#trl-balance [data-stat='load CV']").inner_text().strip()
    assert "10 routed modules" in page.locator("#trl-status").inner_text()

    shot = tmp_path / "space.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.outside_requests == [], f"the page fetched outside assets: {page.outside_requests}"
    assert page.page_errors == []


def test_choosing_a_layer_redraws_the_views(page):
    page.click("#trl-analyse")
    page.wait_for_selector("#trl-token-heatmap img[src^='data:image/png']", timeout=60_000)
    before = page.locator("#trl-token-heatmap img").get_attribute("src")
    from talklora_hub.space.screenshot import _pick

    _pick(page, "#trl-layer", "layer 1")
    page.wait_for_function("() => document.querySelector('#trl-tokens .trl-sub').innerText.includes('layer 1')",
                           timeout=60_000)
    page.wait_for_function("before => document.querySelector('#trl-token-heatmap img').src !== before",
                           arg=before, timeout=60_000)
    assert "layer 1" in page.locator("#trl-balance").inner_text()
    assert page.page_errors == []


def test_generate_streams_new_tokens_into_the_page(page, tmp_path):
    page.fill("#trl-text textarea", "The Senate")
    page.click("#trl-generate")
    page.wait_for_function(
        "() => document.querySelectorAll('#trl-tokens .trl-tok.trl-gen[data-expert]').length >= 24",
        timeout=60_000)
    page.wait_for_function("() => !document.querySelector('#trl-status').innerText.includes('generating')")
    assert page.locator("#trl-tokens .trl-tok.trl-pending").count() == 0
    assert "24 generated" in page.locator("#trl-status").inner_text()
    page.wait_for_selector("#trl-token-heatmap img[src^='data:image/png']")
    _drawn(page, "#trl-token-heatmap img")
    page.screenshot(path=str(tmp_path / "generate.png"), full_page=True)
    assert page.outside_requests == []


def test_screenshot_tool_selects_a_layer_and_module(browser, tiny_models, tmp_path, monkeypatch):
    from PIL import Image

    from talklora_hub.space.screenshot import serve_and_capture

    monkeypatch.delenv("TALKLORA_ZOO_INDEX", raising=False)
    out = serve_and_capture([tiny_models["talklora"]], tmp_path / "docs" / "shot.png", text="The Senate met today.",
                            layer="layer 1", module="mlp.up_proj", browser=browser)
    with Image.open(out) as image:
        assert image.width == 1400 and image.height > 1000
