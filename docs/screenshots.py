"""Screenshots of every tab of the app, as a visitor sees them, into docs/screenshots/.

    python docs/screenshots.py [--out docs/screenshots] [--models wav2lip96,wav2lip256]
    HF_HUB_OFFLINE=1 python docs/screenshots.py --out docs/screenshots/fresh-clone --models ""

Starts ``app.py`` on a free loopback port with random weights of the real architectures for the models named
(the Hub is not needed; the videos show a meaningless mouth, the layout and the figures are real) unless the
``DH_*_CHECKPOINT`` variables already point at weights (``--models ""``: none, as a fresh clone without the Hub
is), then drives headless Chromium through Playwright: asks a question (once the start-up warm-up is done) and
waits for the spoken answer, clicks the first example row of the Text and Audio tabs and waits for its result,
renders a model comparison, opens Status, and shows the top of the page at a phone's width.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    p.add_argument("--models", default="wav2lip96,wav2lip256", help="random weights for these model ids")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import expect

    from common.settings import Settings
    from services.served import app_page, served_app, with_random_generators
    from wav2lip384.models import registry

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="screenshots-"))
    # weights named by a DH_*_CHECKPOINT variable are used as they are; the other models get random ones
    models = [m for m in args.models.split(",") if m and registry.get(m).env_var not in os.environ]
    settings = with_random_generators(Settings.from_env(), models, work)
    with served_app(settings, log_dir=work) as app, app_page(app.url) as page:
        # as a visitor arriving a little after start-up sees it: the start-up warm-up (models, voice, first mel)
        # has finished, so the figures are not those of a request racing it
        deadline = time.monotonic() + 600
        while "warm-up done" not in app.log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(1)
        page.get_by_label("Your question · 您的问题").fill("身份证丢了怎么补办？")
        page.get_by_role("button", name="Ask", exact=True).click()
        expect(page.locator("#ask_timing")).to_contain_text("s of speech", timeout=600_000)
        page.screenshot(path=str(args.out / "ask.png"), full_page=True)
        for tab, key in (("Text → Avatar", "text"), ("Audio → Avatar", "audio")):
            page.get_by_role("tab", name=tab).click()
            page.locator(".tr-body:visible").first.click()  # the first example row: rendered (or spoken) at once
            page.wait_for_function(f"() => {{ const a = document.querySelector('#{key}_audio audio'); "
                                   "return a && a.src; }", timeout=900_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(args.out / f"{key}.png"), full_page=True)
        page.get_by_role("tab", name="Compare models").click()
        page.get_by_role("button", name="Compare", exact=True).click()
        # the results' figures (all models' come at once); not the text "mouth sharpness", which the tab's
        # introduction also says: waiting for it took the screenshot while the comparison was still running
        expect(page.locator(".figure:visible").filter(has_text="licence:").first).to_be_visible(timeout=900_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(args.out / "compare.png"), full_page=True)
        page.get_by_role("tab", name="Status").click()
        expect(page.locator("#status_table")).to_contain_text("Lip-sync", timeout=60_000)
        page.screenshot(path=str(args.out / "status.png"), full_page=True)
        page.get_by_role("tab", name="Talk to it · 对话").click()  # as a visitor finds it, before pressing Record
        page.wait_for_timeout(1500)
        page.screenshot(path=str(args.out / "talk.png"), full_page=True)
        page.get_by_role("tab", name="Ask the assistant").click()
        page.set_viewport_size({"width": 360, "height": 780})
        page.wait_for_timeout(1000)
        page.screenshot(path=str(args.out / "phone.png"))
    print(f"screenshots in {args.out}; app log {app.log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
