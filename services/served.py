"""The real app on a free loopback port, for tools that drive it from outside (``python -m services bench
--browser``, ``docs/screenshots.py``); apart from the request path, like ``bench.py``.

:func:`served_app` starts ``python app.py`` as a child process with the given :class:`~common.settings.Settings`,
waits until it serves its page and stops it on exit; :func:`app_page` opens that page in headless Chromium
(Playwright); :func:`with_random_generators` points settings at random weights of the real architectures.

Why a child process and not ``build_demo(...).launch(prevent_thread_lock=True)`` in this process:

* layering: this package sits below ``app.py`` and never imports gradio or ``app``; starting ``app.py`` is a
  process boundary, not an import, so the import graph stays downward (``docs/`` imports this, not the reverse);
* fidelity: the child runs ``app.py``'s own ``main()`` (its logging, process environment, background warm-up,
  ``queue``/``launch_kwargs``), so tools see the app as a visitor does and nothing here repeats that start-up;
* measurement: the bench times the served app in a process of its own; a model built in the measuring process
  left it measurably slower (question answering 0.01 s -> 1.6 s), which the served app never is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from common.settings import Settings, is_weights_variable
from services.rendering import ROOT
from wav2lip384.models import registry

APP = ROOT / "app.py"
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required")


@dataclasses.dataclass(frozen=True)
class ServedApp:
    url: str  # e.g. http://127.0.0.1:40123/
    log: Path  # the app's stdout and stderr; kept after the app stops
    process: subprocess.Popen


def settings_environment(settings: Settings) -> dict[str, str]:
    """``DH_*`` variables from which ``Settings.from_env`` in the child reads back exactly ``settings``."""
    return settings.to_environ()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def served_app(settings: Settings, log_dir: Path | None = None, start_timeout_s: float = 120.0,
               command: Sequence[str] | None = None) -> Iterator[ServedApp]:
    """Start ``python app.py`` with ``settings`` on a free 127.0.0.1 port; yield once its page answers.

    ``command`` replaces ``python app.py`` (tests use a stand-in); it must serve on ``GRADIO_SERVER_PORT``.
    Raises RuntimeError with the end of the app's log if it exits or does not answer within ``start_timeout_s``.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="served-app-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "app.log"
    # the child inherits this process's environment (PATH, HOME, HF_HUB_OFFLINE, ...) as any child does; our own
    # configuration travels only as the DH_* variables of ``settings``, which override inherited ones
    inherited = {k: v for k, v in os.environ.items() if not is_weights_variable(k)}  # weights: only ``settings``'
    env = {**inherited, **settings_environment(settings), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(command or [sys.executable, str(APP)]), cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None:
                        raise RuntimeError(f"the app exited with code {proc.returncode} before serving; "
                                           f"end of {log_path}:\n{_tail(log_path)}") from None
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the app did not answer on {url} within {start_timeout_s:g} s; "
                                           f"end of {log_path}:\n{_tail(log_path)}") from None
                    time.sleep(0.5)
            yield ServedApp(url, log_path, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def app_page(url: str, width: int = 1280, height: int = 1000) -> Iterator:
    """A Playwright page of headless Chromium on the app at ``url``, once the question box is there."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                     headless=True, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url, wait_until="load")
            # not "networkidle": the session heartbeat keeps the network busy
            page.wait_for_selector("#question textarea", timeout=60_000)
            yield page
        finally:
            browser.close()


def with_random_generators(settings: Settings, models: Sequence[str], folder: Path, seed: int = 0) -> Settings:
    """``settings`` with each model id's weights replaced by a random generator of its real architecture,
    saved under ``folder/<model id>``. Timing and layout do not depend on the weights' values; the mouth does.

    Built in a child process: building the models here left the calling process measurably slower.
    """
    ids = [registry.get(m).id for m in models]
    if not ids:
        return settings
    code = ("import sys, torch; from wav2lip384.models import Wav2LipGenerator, registry; "
            "from wav2lip384.weights import save_pretrained; torch.manual_seed(int(sys.argv[2])); "
            "[save_pretrained(Wav2LipGenerator(registry.get(m).config()), sys.argv[1] + '/' + m) "
            "for m in sys.argv[3:]]")
    subprocess.run([sys.executable, "-c", code, str(folder), str(seed), *ids], cwd=ROOT, check=True)
    return settings.with_weights({registry.get(m).env_var: str(Path(folder) / m) for m in ids})
