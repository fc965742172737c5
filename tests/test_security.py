"""Files: the app opens only what it received as an upload or ships itself (issue 21).

The rule (services/uploads.py) is tested directly, the guard at the door as an ASGI app, and the served app
(``python app.py``) through ``gradio_client`` the way an attacker would use it: a client that names files on the
server instead of uploading them (its upload step replaced by one that passes the path through).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.settings import Settings
from services.uploads import FileDataGuard, FilePolicy, RefusedFile
from wav2lip384.models import registry


def _speech(path: Path) -> Path:
    t = np.arange(16000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), 16000)
    return path


@pytest.fixture
def layout(tmp_path):
    upload = tmp_path / "gradio"
    (upload / "abc123").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = _speech(outside / "secret.wav")
    inside = _speech(upload / "abc123" / "speech.wav")
    (upload / "abc123" / "link.wav").symlink_to(secret)
    (upload / "linkdir").symlink_to(outside, target_is_directory=True)
    return {"upload": upload, "inside": inside, "secret": secret, "policy": FilePolicy([upload])}


def test_policy_allows_only_files_inside_its_folders(layout):
    policy, upload = layout["policy"], layout["upload"]
    assert policy.check(str(layout["inside"])) == layout["inside"].resolve()
    refused = ["/etc/passwd", "/proc/self/environ", str(layout["secret"]),
               str(upload / "abc123" / "link.wav"),  # a link in the upload folder pointing out of it
               str(upload / "linkdir" / "secret.wav"),  # a linked folder
               f"{upload}/abc123/../../outside/secret.wav", "../outside/secret.wav",
               "http://127.0.0.1:9/x.wav", "https://example.org/a.wav", "file:///etc/passwd", "data:audio/wav;base64,AA",
               "//127.0.0.1/share/a.wav", f"{layout['inside']}\x00.png", "", "   "]
    for path in refused:
        with pytest.raises(RefusedFile) as err:
            policy.check(path)
        assert "not uploaded to this app" in str(err.value)  # plain words, never the path itself
        assert not path.strip() or path not in str(err.value)
        assert err.value.reason  # the technical reason is kept for the log
    assert "/etc/passwd" not in str(RefusedFile("x"))


def test_policy_finds_every_file_reference_in_a_request_body(layout):
    policy = layout["policy"]
    ok = {"path": str(layout["inside"]), "meta": {"_type": "gradio.FileData"}}
    body = {"data": ["a question", "/etc/passwd",  # a plain string is text, not a file
                     ok, {"video": {"path": "/etc/shadow", "meta": {"_type": "gradio.FileData"}}},
                     [{"path": "/proc/self/environ"}],
                     {"path": None, "url": "http://127.0.0.1:1/x", "meta": {"_type": "gradio.FileData"}}]}
    reasons = policy.refusals(body)
    assert len(reasons) == 3 and any("/etc/shadow" in r for r in reasons)
    assert policy.refusals({"data": ["text", ok, 3, None]}) == []


def test_guard_refuses_before_the_app_reads_anything(layout):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    seen = []

    async def endpoint(request):
        raw = await request.body()
        try:
            seen.append(json.loads(raw))
        except ValueError:
            seen.append(raw)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/gradio_api/queue/join", endpoint, methods=["POST"])])
    guarded = FileDataGuard(app, layout["policy"])
    with TestClient(guarded) as client:
        bad = client.post("/gradio_api/queue/join",
                          json={"data": [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}]})
        assert bad.status_code == 400 and "not uploaded to this app" in bad.json()["detail"]
        assert seen == []
        good = {"data": [{"path": str(layout["inside"]), "meta": {"_type": "gradio.FileData"}}, "question"]}
        r = client.post("/gradio_api/queue/join", json=good)
        assert r.status_code == 200 and seen == [good]  # the body reaches the app unchanged
        assert client.post("/gradio_api/queue/join", content=b"{not json",
                           headers={"content-type": "application/json"}).status_code == 200  # Gradio's to judge


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"RIFF")

    def log_message(self, *args):
        pass


def _rest_call(url: str, api: str, data: list, timeout: float = 120):
    """One call through Gradio's REST route, as curl would make it: POST the inputs, then read the event's
    stream until it completes; the outputs, or the error the server sent."""
    req = urllib.request.Request(url + f"gradio_api/call/{api}", method="POST", data=json.dumps({"data": data}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        event_id = json.loads(r.read())["event_id"]
    event, seen = None, []
    with urllib.request.urlopen(url + f"gradio_api/call/{api}/{event_id}", timeout=timeout) as r:
        for raw in r:
            line = raw.decode().strip()
            seen.append(line[:200])
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = line.split(":", 1)[1].strip()
                assert event == "complete", f"/{api} answered an error: {payload}"
                return json.loads(payload)
    raise AssertionError(f"/{api}: the event stream ended without an answer: {seen}")


def _answered(call, tries: int = 3):
    for attempt in range(tries):
        try:
            return call()
        except AssertionError as e:
            if "without an answer" not in str(e) or attempt == tries - 1:
                raise
            time.sleep(1)


@pytest.mark.slow
def test_served_app_refuses_every_file_it_did_not_receive(tmp_path, monkeypatch):
    """The issue's suite against ``python app.py``: nothing outside the upload folder is read, copied into Gradio's
    cache, served or fetched; every refusal is a plain message; the app answers the next request."""
    from gradio_client import Client
    from gradio_client import client as gc_client

    from services.served import served_app

    upload = tmp_path / "gradio-cache"
    upload.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(upload))
    outside = tmp_path / "outside"
    outside.mkdir()
    secret_media = _speech(outside / "private_speech.wav")
    (upload / "planted").mkdir()
    (upload / "planted" / "escape.wav").symlink_to(secret_media)

    recorder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    local_url = f"http://127.0.0.1:{recorder.server_address[1]}/speech.wav"

    settings = Settings(cache_dir=str(tmp_path / "cache"), tts_engine="espeak").with_weights(
        dict.fromkeys(registry.weights_variables(), ""))  # every lip-sync model off
    attacks = ["/etc/passwd", "/proc/self/environ", str(secret_media), str(upload / "planted" / "escape.wav"),
               f"{upload}/../outside/private_speech.wav", "../../../etc/passwd", local_url]
    # a malicious client: names the server's files instead of uploading its own
    monkeypatch.setattr(gc_client.Endpoint, "_upload_file", lambda self, f, data_index: f)
    try:
        with served_app(settings, log_dir=tmp_path / "log") as app:
            client = Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))
            for path in attacks:
                speech = {"path": path, "meta": {"_type": "gradio.FileData"}}
                with pytest.raises(Exception) as err:  # noqa: PT011 (the client's error type varies by route)
                    client.predict(speech, None, None, "wav2lip96", "error", api_name="/audio_to_avatar")
                assert "passwd" not in str(err.value) or "not uploaded" in str(err.value)
            # the same through the plain REST route, as curl would send it
            for path in attacks[:3]:
                req = urllib.request.Request(
                    app.url + "gradio_api/call/audio_to_avatar", method="POST",
                    data=json.dumps({"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, None, None,
                                              "wav2lip96", "error"]}).encode(),
                    headers={"content-type": "application/json"})
                with pytest.raises(urllib.error.HTTPError) as http_err:
                    urllib.request.urlopen(req, timeout=30)
                assert http_err.value.code == 400
                assert "not uploaded to this app" in json.loads(http_err.value.read())["detail"]
            # Gradio's file route does not hand out what was never copied
            for path in ("/etc/passwd", str(secret_media)):
                with pytest.raises(urllib.error.HTTPError):
                    urllib.request.urlopen(app.url + "gradio_api/file=" + path, timeout=10)
            # keeps serving: the next visitor's request answers. Gradio's event streams race on a loaded machine
            # (gradio_client once raised CancelledError, the REST route once ended its stream without the
            # answer, both with the server healthy): one of three fresh requests must answer
            answer = _answered(lambda: _rest_call(app.url, "status", []))
            assert answer and "lip" in json.dumps(answer, ensure_ascii=False).lower()
            log = app.log.read_text(errors="replace")
    finally:
        recorder.shutdown()
    copied = [p.name for p in upload.rglob("*") if p.is_file() and not p.is_symlink()]
    assert not {"passwd", "environ", "private_speech.wav", "escape.wav", "speech.wav"} & set(copied), copied
    assert _Recorder.hits == [], "the server fetched a URL it was given as a file"
    assert "refused a request" in log and "Traceback" not in log
