"""services.served: the real app on a free loopback port for the bench and the screenshots (and a stand-in app)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from common.settings import Settings
from services.served import app_page, served_app, settings_environment, with_random_generators

# Serves, on GRADIO_SERVER_PORT after a short start-up, the DH_* variables it was given as JSON.
STAND_IN = textwrap.dedent("""
    import http.server, json, os, time
    time.sleep(1.0)
    body = json.dumps({k: v for k, v in os.environ.items() if k.startswith(("DH_", "GRADIO_"))}).encode()
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(body)
    print("stand-in up", flush=True)
    http.server.HTTPServer(("127.0.0.1", int(os.environ["GRADIO_SERVER_PORT"])), Handler).serve_forever()
""")


def _settings(tmp_path: Path) -> Settings:
    return Settings(qa_kb=str(tmp_path / "kb.jsonl"), tts_engine="espeak", tts_max_chars=321,
                    max_audio_seconds=12.5, cache_dir=str(tmp_path / "cache")
                    ).with_weights({"DH_WAV2LIP384_CHECKPOINT": ""})


def test_settings_travel_to_the_child_exactly(tmp_path):
    settings = _settings(tmp_path)
    assert Settings.from_env(settings_environment(settings)) == settings


def test_served_app_waits_until_it_serves_then_stops_it(tmp_path):
    settings = _settings(tmp_path)
    with served_app(settings, log_dir=tmp_path / "log", start_timeout_s=30,
                    command=[sys.executable, "-c", STAND_IN]) as app:
        assert app.url.startswith("http://127.0.0.1:") and app.process.poll() is None
        with urllib.request.urlopen(app.url, timeout=5) as r:
            seen = json.loads(r.read())
    assert app.process.poll() is not None  # stopped on leaving the block
    assert Settings.from_env(seen) == settings  # the child reads back exactly the settings given
    assert seen["GRADIO_SERVER_NAME"] == "127.0.0.1" and app.url.endswith(f":{seen['GRADIO_SERVER_PORT']}/")
    assert app.log == tmp_path / "log" / "app.log" and "stand-in up" in app.log.read_text()


def test_an_app_that_exits_is_reported_with_its_log(tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*no such weights"):
        with served_app(Settings(), log_dir=tmp_path, command=[
                sys.executable, "-c", "import sys; print('no such weights'); sys.exit(3)"]):
            pass


def test_an_app_that_never_answers_is_stopped(tmp_path):
    pid_file = tmp_path / "pid"
    with pytest.raises(RuntimeError, match="did not answer .* within 1 s"):
        with served_app(Settings(), log_dir=tmp_path, start_timeout_s=1, command=[
                sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                "time.sleep(60)"]):
            pass
    with pytest.raises(ProcessLookupError):  # the child was stopped and reaped, not left behind
        os.kill(int(pid_file.read_text()), 0)


@pytest.fixture(scope="module")
def real_app(tmp_path_factory):
    """``python app.py`` itself, offline, with random 96 weights: what the bench and the screenshots start."""
    tmp = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        settings = with_random_generators(Settings(cache_dir=str(tmp / "cache"), tts_engine="espeak"),
                                          ["96"], tmp / "weights")
        assert settings.lipsync_weights["DH_WAV2LIP96_CHECKPOINT"] == str(tmp / "weights" / "wav2lip96")
        with served_app(settings, log_dir=tmp / "log") as app:
            yield app
    assert app.process.poll() is not None  # stopped on leaving


@pytest.mark.slow
def test_the_real_app_serves_its_ui(real_app):
    with urllib.request.urlopen(real_app.url + "config", timeout=10) as r:
        config = r.read().decode()
    assert "Digital human for public services" in config and "Ask the assistant" in config


@pytest.mark.slow
@pytest.mark.browser
def test_the_real_app_opens_in_headless_chromium(real_app):
    pytest.importorskip("playwright")
    if not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()):
        pytest.skip("Debian chromium is not installed (apt-get install chromium; .ci/run does it)")
    with app_page(real_app.url) as page:  # yields once the question box is there
        assert page.get_by_role("tab", name="Ask the assistant").count() == 1
