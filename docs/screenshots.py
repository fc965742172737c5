"""Screenshots of every tab of the app, as a visitor sees them, into docs/screenshots/.

    python docs/screenshots.py [--out docs/screenshots] [--models wav2lip96,wav2lip256]

Starts ``app.py`` on a free loopback port with random weights of the real architectures for the models named
(the Hub is not needed; the videos show a meaningless mouth, the layout and the figures are real) unless the
``DH_*_CHECKPOINT`` variables already point at weights, then drives headless Chromium through Playwright: asks a
question and waits for the spoken answer, renders a model comparison, opens Status.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _random_weights(models: list[str], folder: Path) -> dict[str, str]:
    """Build random generators in a child process; returns the DH_* variables that point at them."""
    code = ("import sys, torch; from wav2lip384 import registry; from wav2lip384.models import Wav2LipGenerator; "
            "from wav2lip384.weights import save_pretrained; torch.manual_seed(0); "
            "[save_pretrained(Wav2LipGenerator(registry.get(m).config()), sys.argv[1] + '/' + m) "
            "for m in sys.argv[2:]]")
    subprocess.run([sys.executable, "-c", code, str(folder), *models], cwd=ROOT, check=True)
    from wav2lip384 import registry

    return {registry.get(m).env_var: str(folder / m) for m in models}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    p.add_argument("--models", default="wav2lip96,wav2lip256", help="random weights for these model ids")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import expect, sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="screenshots-"))
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False",
           **_random_weights([m for m in args.models.split(",") if m], work)}
    log = open(work / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the app did not start; see {work / 'app.log'}") from None
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                         headless=True, args=["--no-sandbox", "--disable-gpu",
                                                              "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="load")
            page.wait_for_selector("#question textarea", timeout=60_000)
            page.get_by_label("Your question · 您的问题").fill("身份证丢了怎么补办？")
            page.get_by_role("button", name="Ask", exact=True).click()
            expect(page.locator("#ask_timing")).to_contain_text("s of speech", timeout=600_000)
            page.screenshot(path=str(args.out / "ask.png"), full_page=True)
            page.get_by_role("tab", name="Text → Avatar").click()
            page.screenshot(path=str(args.out / "text.png"), full_page=True)
            page.get_by_role("tab", name="Audio → Avatar").click()
            page.screenshot(path=str(args.out / "audio.png"), full_page=True)
            page.get_by_role("tab", name="Compare models").click()
            page.get_by_role("button", name="Compare", exact=True).click()
            expect(page.get_by_text("mouth sharpness").first).to_be_visible(timeout=900_000)  # a result's figures
            page.wait_for_timeout(1500)
            page.screenshot(path=str(args.out / "compare.png"), full_page=True)
            page.get_by_role("tab", name="Status").click()
            expect(page.locator("#status_table")).to_contain_text("Lip-sync", timeout=60_000)
            page.screenshot(path=str(args.out / "status.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    print(f"screenshots in {args.out}; app log {work / 'app.log'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
