"""A screenshot of the running Space (for READMEs): serve the app on 127.0.0.1, drive Debian's chromium with
Playwright, analyse a text (optionally for one layer/module) and save a PNG. Development tooling: needs
`playwright` (PyPI) and a system chromium; never part of the deployed folder."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Optional, Sequence, Union

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pick(page, selector: str, label: str) -> None:
    """Chooses `label` in a Gradio dropdown (types it and confirms, as a user would)."""
    box = page.locator(f"{selector} input")
    box.click()
    box.fill(label)
    page.locator(f'li[role="option"][aria-label="{label}"]').first.click()


def capture(url: str, out: Union[str, Path], text: Optional[str] = None, layer: Optional[str] = None,
            module: Optional[str] = None, width: int = 1400, height: int = 1000, full_page: bool = True,
            chromium: Optional[str] = None, timeout_ms: int = 180_000, browser=None) -> Path:
    """Opens url, analyses text and saves the page as a PNG at out. layer: e.g. "layer 12"; module: e.g.
    "mlp.up_proj" (the dropdowns' labels). browser: a running Playwright browser to use (default: launch
    the system chromium)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if browser is not None:
        _capture_with(browser, url, out, text, layer, module, width, height, full_page, timeout_ms)
        return out
    from playwright.sync_api import sync_playwright

    executable = chromium or shutil.which("chromium")
    if executable is None:
        raise RuntimeError("No chromium found: install it (`apt-get install -y chromium`).")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            _capture_with(launched, url, out, text, layer, module, width, height, full_page, timeout_ms)
        finally:
            launched.close()
    return out


def _capture_with(browser, url, out, text, layer, module, width, height, full_page, timeout_ms) -> None:
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.goto(url, wait_until="load")
        page.wait_for_selector("#trl-analyse", timeout=timeout_ms)
        if text is not None:
            page.fill("#trl-text textarea", text)
        page.click("#trl-analyse")
        page.wait_for_selector("#trl-token-heatmap img", timeout=timeout_ms)
        for selector, label in (("#trl-layer", layer), ("#trl-module", module)):
            if label:
                _pick(page, selector, label)
                page.wait_for_function(
                    "label => document.querySelector('#trl-tokens .trl-sub').innerText.includes(label)",
                    arg=label.replace("layer ", ""), timeout=timeout_ms)
                page.wait_for_selector("#trl-token-heatmap img", timeout=timeout_ms)
        page.mouse.move(0, 0)
        page.screenshot(path=str(out), full_page=full_page)
    finally:
        context.close()


def serve_and_capture(models: Sequence[str], out: Union[str, Path], **capture_kwargs) -> Path:
    """Launches the app in this process on a free loopback port, captures it, and shuts it down."""
    from .app import APP_CSS, app_theme, build_app

    demo = build_app(list(models), allow_any=False)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                css=APP_CSS, theme=app_theme())
    try:
        return capture(f"http://127.0.0.1:{port}/", out, **capture_kwargs)
    finally:
        demo.close()
