"""The page's screenshot in bench/results/serve_page.png: serves `make demo`'s model and index, searches one of the
demo's zero-shot queries in headless Chromium (Debian's `chromium`, driven by Playwright), opens the first match's
heatmap, and saves the page.

    python bench/serve_screenshot.py [--demo runs/demo] [--query 0] [--out bench/results/serve_page.png]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from serve import demo_paths  # bench/serve.py, beside this file


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo", default="runs/demo")
    p.add_argument("--query", type=int, default=0, help="which zero-shot query of the demo")
    p.add_argument("--out", default="bench/results/serve_page.png")
    a = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    demo_paths(a.demo)  # refuses, in one line, a folder that is not a finished demo
    demo = pathlib.Path(a.demo)
    query = json.loads((demo / "data" / "zeroshot" / "test.jsonl").read_text().splitlines()[a.query])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mire_jax.serve", a.demo, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
            browser = pw.chromium.launch_persistent_context(
                profile, executable_path=shutil.which("chromium"), headless=True,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--no-first-run", "--disable-sync"],
                viewport={"width": 1200, "height": 900})
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('health').textContent.includes('passages')")
            page.set_input_files("#image-input", str(demo / "data" / "images" / query["image"]))
            page.fill("#question", query["question"])
            page.fill("#k", "5")
            page.click("#search-button")
            page.wait_for_selector("#results li.result", timeout=60_000)
            page.wait_for_selector("#looked:not([hidden])", timeout=60_000)
            page.locator("#results li.result").nth(0).locator("button.why").click()
            page.wait_for_function("(() => { const img = document.getElementById('heatmap-img');"
                                   " return !img.hidden && img.complete && img.naturalWidth > 0; })()")
            page.screenshot(path=a.out, full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
