"""README's ``gradio_client`` snippets, extracted from README.md and run as written against ``python app.py``
(services.served) offline: once as a fresh clone is (no lip-sync weights, no speech recogniser) and once with random
weights of the real 96 and 256 architectures. Every call must return plain values, the log must hold no traceback,
and the app must answer the next request.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.settings import Settings
from services.served import served_app, with_random_generators

ROOT = Path(__file__).resolve().parents[1]
README_URL = "http://127.0.0.1:7860/"

# appended to the snippet: the values it got are plain, and the app still answers
CHECKS = """
import json
for name, values in [("ask", (answer, choices, video, timing, details, answer_mp4, answer_wav, notice, replay)),
                     ("compare", out)]:
    assert "__type__" not in json.dumps(values, default=str), (name, values)
assert isinstance(choices, list) and all(isinstance(c, str) for c in choices), choices
assert answer_wav and "身份证" in answer, answer
again, *_ = app.predict("怎么办理社保卡？", avatar, "paper384", "auto", api_name="/ask")
assert "社保" in again
print("README-SNIPPET-OK", json.dumps({"notice": notice, "video": bool(video)}, ensure_ascii=False))
"""


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Scripting it with `gradio_client`", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "README has no python block under 'Scripting it with gradio_client'"
    assert README_URL in code[1]
    return code[1]


def test_the_snippet_is_found_and_calls_every_public_endpoint():
    code = readme_snippet()
    for name in ("/text_to_avatar", "/audio_to_avatar", "/ask", "/ask_voice", "/compare"):
        assert f'api_name="{name}"' in code


@pytest.mark.slow
@pytest.mark.parametrize("weights", [[], ["wav2lip96", "wav2lip256"]], ids=["no-weights", "random-96-256"])
def test_readme_client_snippets_run_offline_as_written(weights, tmp_path, monkeypatch):
    pytest.importorskip("gradio_client")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = with_random_generators(Settings(cache_dir=str(tmp_path / "cache"), tts_engine="espeak"), weights,
                                      tmp_path / "weights")
    with served_app(settings, log_dir=tmp_path / "log") as app:
        code = readme_snippet().replace(README_URL, app.url) + CHECKS
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=1200)
        log = app.log.read_text(errors="replace")
    assert run.returncode == 0, f"{run.stdout[-2000:]}\n{run.stderr[-4000:]}\napp log:\n{log[-3000:]}"
    assert "README-SNIPPET-OK" in run.stdout
    assert "Traceback" not in log, log[log.index("Traceback") - 200:][:3000]
    if not weights:
        assert "Lip-sync is not available on this server yet" in run.stdout
