"""Our GPT-SoVITS *client* against a small stand-in api_v2 server on 127.0.0.1 started by the test.

The stand-in follows the api_v2 contract (POST /tts JSON -> WAV at the model's rate; streaming_mode ->
a WAV header then raw int16 chunks; errors -> HTTP 400 JSON). It does not test GPT-SoVITS itself.
"""

from __future__ import annotations

import io
import json
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from common.errors import UserFacingError
from tts import TTS, to_lipsync_audio
from tts.gpt_sovits import GptSovitsConfig, GptSovitsEngine

SECONDS_PER_CHAR = 0.2


class _FakeApiV2(BaseHTTPRequestHandler):
    rate = 32000
    header_rate = None  # what the streaming header claims (api_v2 writes 32000 there in some versions)
    fail = False
    requests: list = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._json(400, {"message": "text is required"})

    def do_POST(self):
        if self.path != "/tts":
            return self._json(404, {"detail": "Not Found"})
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(req)
        for key in ("text", "text_lang", "ref_audio_path", "prompt_lang"):
            if not req.get(key):
                return self._json(400, {"message": f"{key} is required"})
        if req.get("media_type") != "wav":
            return self._json(400, {"message": "media_type must be wav here"})
        if type(self).fail:
            return self._json(400, {"message": "tts failed", "Exception": "CUDA out of memory"})
        n = int(SECONDS_PER_CHAR * len(req["text"]) * self.rate)
        t = np.arange(n) / self.rate
        pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        if req.get("streaming_mode"):
            self.end_headers()  # no length: HTTP/1.0, the body ends when the connection closes
            head = io.BytesIO()
            with wave.open(head, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(self.header_rate or self.rate)
            self.wfile.write(head.getvalue())
            raw = pcm.tobytes()
            for i in range(0, len(raw), 3001):  # odd chunk size: a sample split across chunks
                self.wfile.write(raw[i:i + 3001])
                self.wfile.flush()
        else:
            buf = io.BytesIO()
            sf.write(buf, pcm, self.rate, format="WAV", subtype="PCM_16")
            data = buf.getvalue()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


@pytest.fixture
def server():
    handler = type("Handler", (_FakeApiV2,), {"requests": [], "rate": 32000, "fail": False, "header_rate": None})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def ref_clip(tmp_path):
    def make(seconds: float):
        p = tmp_path / f"ref_{seconds}.wav"
        sf.write(p, np.zeros(int(seconds * 16000), np.float32), 16000)
        return str(p)

    return make


def test_client_sends_the_api_v2_request_and_reads_32k(server, ref_clip):
    handler, url = server
    ref = ref_clip(5.0)
    t = TTS(gpt_sovits_url=url, gpt_sovits_ref_audio=ref, gpt_sovits_prompt_text="参考文本", gpt_sovits_prompt_lang="zh")
    assert t.active_engine("zh") == "gpt_sovits"
    sp = t.synthesize("您好，请问有什么可以帮您？")
    assert sp.engine == "gpt_sovits" and sp.sample_rate == 32000 and sp.lang == "zh"
    assert sp.duration_s == pytest.approx(SECONDS_PER_CHAR * len("您好，请问有什么可以帮您？"), abs=0.01)
    req = handler.requests[-1]
    assert req["text"] == "您好，请问有什么可以帮您？" and req["text_lang"] == "zh"
    assert req["ref_audio_path"] == ref and req["prompt_text"] == "参考文本" and req["prompt_lang"] == "zh"
    assert req["media_type"] == "wav" and req["streaming_mode"] is False


def test_48k_output_is_kept_native_and_converted_for_lipsync(server, ref_clip):
    handler, url = server
    handler.rate = 48000
    sp = TTS(gpt_sovits_url=url, gpt_sovits_ref_audio=ref_clip(4.0)).synthesize("Hello there.", engine="gpt_sovits")
    assert sp.sample_rate == 48000 and sp.lang == "en"
    assert handler.requests[-1]["text_lang"] == "en"
    a16 = to_lipsync_audio(sp.wave, sp.sample_rate)
    assert len(a16) == pytest.approx(sp.duration_s * 16000, abs=2)


def test_streaming_mode_assembles_header_and_raw_chunks(server, ref_clip):
    handler, url = server
    eng = GptSovitsEngine(GptSovitsConfig(url=url, ref_audio=ref_clip(5.0), streaming=True))
    chunks = list(eng.stream_chunks("您好世界", "zh"))
    assert len(chunks) > 1 and all(sr == 32000 for _, sr in chunks)
    sp = eng.synthesize("您好世界", "zh")
    assert handler.requests[-1]["streaming_mode"] is True
    assert sp.duration_s == pytest.approx(SECONDS_PER_CHAR * 4, abs=0.01)
    assert 0.25 < np.abs(sp.wave).max() < 0.35  # int16 decoded correctly across odd chunk boundaries

    handler.rate, handler.header_rate = 48000, 32000  # a v4 server whose stream header says 32 kHz
    eng48 = GptSovitsEngine(GptSovitsConfig(url=url, ref_audio=ref_clip(5.0), streaming=True, stream_sample_rate=48000))
    assert eng48.synthesize("您好世界", "zh").sample_rate == 48000


@pytest.mark.parametrize("seconds", [2.0, 12.0])
def test_reference_clip_outside_3_to_10_s_is_explained(server, ref_clip, seconds):
    _, url = server
    t = TTS(gpt_sovits_url=url, gpt_sovits_ref_audio=ref_clip(seconds))
    st = {s.name: s for s in t.engines()}["gpt_sovits"]
    assert not st.available and "3-10 s" in st.reason and f"{seconds:.1f} s" in st.reason
    assert t.synthesize("您好").engine == "espeak"  # auto falls back to the offline voice
    with pytest.raises(UserFacingError, match="3-10 s"):
        t.synthesize("您好", engine="gpt_sovits")


def test_server_error_falls_back_in_auto_and_is_reported_when_explicit(server, ref_clip):
    handler, url = server
    handler.fail = True
    t = TTS(gpt_sovits_url=url, gpt_sovits_ref_audio=ref_clip(5.0))
    with pytest.raises(UserFacingError, match="CUDA out of memory"):
        TTS(gpt_sovits_url=url, gpt_sovits_ref_audio=ref_clip(5.0)).synthesize("您好", engine="gpt_sovits")
    sp = t.synthesize("您好。再见。")
    assert sp.engine == "espeak" and sp.duration_s > 0.5
    st = {s.name: s for s in t.engines()}["gpt_sovits"]
    assert not st.available and "failed just now" in st.reason


def test_not_configured_or_unreachable_is_reported_quickly(ref_clip):
    st = {s.name: s for s in TTS().engines()}["gpt_sovits"]
    assert not st.available and "DH_GPT_SOVITS_URL" in st.reason
    t0 = time.perf_counter()
    st = {s.name: s for s in TTS(gpt_sovits_url="http://127.0.0.1:9", gpt_sovits_ref_audio=ref_clip(5.0)).engines()}
    assert not st["gpt_sovits"].available and "not reachable" in st["gpt_sovits"].reason
    assert time.perf_counter() - t0 < 5
