"""The project installs, starts and is configured the way README.md says."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from common.errors import UserFacingError
from common.hub import HubFile, resolve_file, resolve_snapshot
from common.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_settings_read_prefixed_environment_and_keep_defaults():
    s = Settings.from_env({"DH_WAV2LIP384_CHECKPOINT": "me/w384", "DH_MAX_AUDIO_SECONDS": "12.5",
                           "DH_S3FD_CHECKPOINT": "my/s3fd", "DH_WAV2LIP96_CHECKPOINT": "", "PATH": "/bin"})
    assert s.max_audio_seconds == 12.5 and s.s3fd_checkpoint == "my/s3fd"  # a field, not a lip-sync model
    assert s.lipsync_weights == {"DH_WAV2LIP384_CHECKPOINT": "me/w384", "DH_WAV2LIP96_CHECKPOINT": ""}
    assert Settings(llm_api_key="secret").describe()["DH_LLM_API_KEY"] == "***"
    assert Settings.from_env(s.to_environ()) == s  # what a child process gets reads back exactly
    assert s.with_weights({"DH_WAV2LIP96_CHECKPOINT": "x"}).lipsync_weights["DH_WAV2LIP96_CHECKPOINT"] == "x"
    with pytest.raises(ValueError):
        s.with_weights({"wav2lip96_checkpoint": "x"})
    hash(s)  # still hashable (the weights mapping is left out of the hash)


def test_model_weights_come_from_the_registry_and_settings_only_override_them():
    """Each model's default weights are written once, in the registry; the settings carry only what a deployment
    sets (an empty value switches the model off), so adding a model adds no settings field."""
    from wav2lip384.models import registry

    default = Settings()
    for mid in registry.ids():
        spec = registry.get(mid)
        assert spec.weights_spec(default) == spec.default_weights
        assert spec.weights_spec(default.with_weights({spec.env_var: ""})) == ""
        assert spec.weights_spec(Settings.from_env({spec.env_var: "me/w"})) == "me/w"
    assert registry.unknown_weights_variables(Settings.from_env({"DH_WAV2LIP_96_CHECKPOINT": "x"})) == [
        "DH_WAV2LIP_96_CHECKPOINT"]
    source = (ROOT / "common" / "settings.py").read_text(encoding="utf-8")
    for spec in registry.MODELS.values():  # no default written twice
        assert not spec.default_weights or spec.default_weights not in source


def test_importing_the_settings_touches_no_file():
    """``import common.settings`` has no side effects (the persistent-volume check runs when a Settings is made)."""
    code = ("import os, pathlib; calls = []\n"
            "for name in ('is_dir', 'exists', 'stat'):\n"
            "    orig = getattr(pathlib.Path, name)\n"
            "    setattr(pathlib.Path, name, lambda self, *a, _o=orig, _n=name, **k: (calls.append((_n, str(self))), "
            "_o(self, *a, **k))[1])\n"
            "real_access = os.access\n"
            "os.access = lambda *a, **k: (calls.append(('access', a[0])), real_access(*a, **k))[1]\n"
            "import common.settings\n"
            "assert not calls, calls\n"
            "common.settings.Settings()\n"
            "assert calls, 'the cache default is computed per Settings'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_setting_is_documented_in_readme():
    from wav2lip384.models import registry

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for env_name in [*Settings().describe(), *registry.weights_variables()]:
        assert env_name in readme, f"{env_name} missing from README"


def test_resolve_file_accepts_local_paths(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert resolve_file(f) == f
    with pytest.raises(UserFacingError, match="no file at"):
        resolve_file(tmp_path / "missing.pth", what="weights")


def test_offline_hub_fails_fast_with_a_message_naming_repo_and_fix():
    start = time.perf_counter()
    with pytest.raises(UserFacingError) as err:
        resolve_file("nobody/nothing:model.pth", what="Wav2Lip-96 generator", how_to_fix="Set DH_X to a file.")
    assert time.perf_counter() - start < 3
    msg = str(err.value)
    assert "nobody/nothing:model.pth" in msg and "Set DH_X" in msg and "Wav2Lip-96" in msg
    with pytest.raises(UserFacingError, match="not reachable"):
        resolve_snapshot("nobody/nothing", what="embedder")


def test_hub_spec_parsing():
    assert HubFile.parse("a/b:c/d.pth") == HubFile("a/b", "c/d.pth")
    assert HubFile.parse("a/b", default_filename="x.bin").filename == "x.bin"
    with pytest.raises(UserFacingError):
        HubFile.parse("not-a-repo:x")


def test_readme_has_space_front_matter_and_exactly_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    front = readme.split("---")[1]
    for key in ("sdk: gradio", "sdk_version:", "app_file: app.py", "python_version:"):
        assert key in front
    section = readme.split("## Two commands")[1].split("\n## ")[0]
    commands = re.findall(r"```bash\n\s*(.+?)\n\s*```", section, flags=re.S)
    assert commands == ["pip install -r requirements.txt && python app.py",
                        "pip install -r requirements-dev.txt && python -m pytest"]


def test_requirements_are_exact_pins_with_cpu_torch():
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    pins = [ln for ln in lines if ln]
    assert "torch==2.13.0" in pins
    assert all("==" in p for p in pins), [p for p in pins if "==" not in p]
    opencv = next(p for p in pins if p.startswith("opencv"))
    assert opencv.split("==")[1].startswith("4."), "OpenCV 5 dropped the Haar cascades we rely on"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_app_serves_http_on_loopback_logs_what_is_missing_and_still_speaks_the_answer(tmp_path):
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1", "DH_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("GRADIO_SERVER_NAME", None)
    log = tmp_path / "app.log"
    with open(log, "w") as out_file:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out_file,
                                stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    assert r.status == 200
                    assert "<html" in r.read(4096).decode("utf-8", "replace").lower()
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("app did not serve HTTP within 30 s")
        # right after start-up, once: every part that is missing or fell back, with the variable to set
        deadline = time.monotonic() + 90
        while "start-up: Face detector" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        # no lip-sync weights anywhere: an API client still gets the answer and its speech, without an error
        from gradio_client import Client, handle_file

        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        answer, _sugg, video, timing, details, full, audio, notice, _replay = client.predict(
            "身份证丢了怎么补办？", handle_file(str(ROOT / "examples" / "astronaut_512.jpg")), None, "auto",
            api_name="/ask")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    out = log.read_text()
    assert f"127.0.0.1:{port}" in out  # binds to loopback by default and prints the address
    assert "start-up: Lip-sync: Wav2Lip 96: unavailable" in out and "DH_WAV2LIP96_CHECKPOINT" in out
    assert "start-up: Face detector" in out and "DH_S3FD_CHECKPOINT" in out
    assert details["answered"] and details["text"] in answer and "spoken answer ready" in timing
    assert not isinstance(video, str) and full is None  # a calm notice in plain words (the variable: details)...
    assert notice.startswith("Lip-sync is not available on this server yet") and "DH_" not in notice
    assert "DH_WAV2LIP96_CHECKPOINT" in details["lipsync_problem"]
    import soundfile as sf

    assert sf.info(audio).duration > 1.0  # ...and the answer, spoken


def test_caches_live_on_a_persistent_volume_when_one_is_mounted(tmp_path):
    from common.settings import _default_cache

    volume = tmp_path / "data"
    assert not _default_cache(volume).startswith(str(volume))  # no volume: ~/.cache (or XDG_CACHE_HOME)
    volume.mkdir()
    assert _default_cache(volume) == str(volume / "digital-human")
