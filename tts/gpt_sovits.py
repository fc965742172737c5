"""Client of a running GPT-SoVITS ``api_v2`` server (the paper's TTS), used when its URL is configured.

Contract (GPT-SoVITS ``api_v2.py``): ``POST {url}/tts`` with a JSON body ``text``, ``text_lang``,
``ref_audio_path`` (a path *on the server*), ``prompt_text``, ``prompt_lang``, ``media_type`` and
``streaming_mode``. Success: ``audio/wav`` bytes (non-streaming: a complete WAV at the model's rate,
32 kHz for v1/v2, 24 kHz for v3, 48 kHz for v4; streaming: one WAV header chunk followed by raw
little-endian int16 PCM chunks). Failure: HTTP 400 with JSON ``{"message": ..., "Exception": ...}``.

GPT-SoVITS refuses reference clips outside 3-10 s; when the clip is on this machine we check it before
sending so the user gets the reason at once instead of a server stack trace.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserFacingError
from tts.base import Engine, EngineStatus, Speech

REF_MIN_S, REF_MAX_S = 3.0, 10.0


@dataclass(frozen=True)
class GptSovitsConfig:
    url: str = ""  # e.g. http://127.0.0.1:9880 ; empty disables the engine
    ref_audio: str = ""  # path of the 3-10 s reference clip as the *server* sees it
    prompt_text: str = ""  # transcript of the reference clip
    prompt_lang: str = "zh"
    streaming: bool = False  # ask for streaming_mode and assemble the chunks (lower first-byte latency)
    timeout_s: float = 120.0  # a long sentence on a CPU server can take a while
    probe_timeout_s: float = 1.5
    text_split_method: str = "cut5"  # split at every punctuation server-side
    # api_v2's streaming header is written with a fixed 32 kHz in some versions; set this for a 24/48 kHz model
    stream_sample_rate: int = 0
    speed_factor: float = 1.0


def check_reference_clip(path: str) -> str:
    """'' when the clip is fine or not on this machine (said in the status), else a user-facing reason."""
    p = Path(path).expanduser()
    if not p.is_file():
        return ""
    import soundfile as sf

    try:
        info = sf.info(str(p))
    except Exception as err:
        return f"the GPT-SoVITS reference clip {p} cannot be read as audio ({err})"
    secs = info.frames / float(info.samplerate)
    if not REF_MIN_S <= secs <= REF_MAX_S:
        return (f"the GPT-SoVITS reference clip {p.name} is {secs:.1f} s long; GPT-SoVITS needs "
                f"{REF_MIN_S:.0f}-{REF_MAX_S:.0f} s. Cut a {REF_MIN_S:.0f}-{REF_MAX_S:.0f} s clip and set DH_GPT_SOVITS_REF_AUDIO.")
    return ""


def _pcm16(data: bytes) -> np.ndarray:
    n = len(data) // 2
    return np.frombuffer(data[: 2 * n], dtype="<i2").astype(np.float32) / 32768.0


def parse_wav_header(buf: bytes) -> tuple[int, int, int, int] | None:
    """(sample_rate, channels, bits, offset of PCM data) from a RIFF header, or None if incomplete.

    Hand-parsed because a *streamed* WAV has a header whose sizes are 0/wrong (soundfile refuses it).
    """
    if len(buf) < 12:
        return None
    if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise ValueError("GPT-SoVITS did not answer with WAV audio")
    pos, fmt = 12, None
    while pos + 8 <= len(buf):
        cid, size = buf[pos:pos + 4], struct.unpack("<I", buf[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            if pos + 8 + 16 > len(buf):
                return None
            _tag, ch, sr, _br, _align, bits = struct.unpack("<HHIIHH", buf[pos + 8:pos + 24])
            fmt = (sr, ch, bits)
        elif cid == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk before its fmt chunk")
            return fmt[0], fmt[1], fmt[2], pos + 8
        pos += 8 + size + (size & 1)
    return None


class GptSovitsEngine(Engine):
    name = "gpt_sovits"
    languages = ("zh", "en")

    def __init__(self, config: GptSovitsConfig) -> None:
        self.config = config

    def _payload(self, text: str, lang: str, streaming: bool) -> dict:
        c = self.config
        return {"text": text, "text_lang": lang, "ref_audio_path": c.ref_audio, "prompt_text": c.prompt_text,
                "prompt_lang": c.prompt_lang, "media_type": "wav", "streaming_mode": bool(streaming),
                "text_split_method": c.text_split_method, "speed_factor": c.speed_factor, "batch_size": 1}

    def status(self) -> EngineStatus:
        c = self.config
        if not c.url:
            return EngineStatus(self.name, False, "not configured (set DH_GPT_SOVITS_URL to a running api_v2 server)",
                                self.languages)
        if not c.ref_audio:
            return EngineStatus(self.name, False, "no reference clip (set DH_GPT_SOVITS_REF_AUDIO, 3-10 s)",
                                self.languages)
        bad = check_reference_clip(c.ref_audio)
        if bad:
            return EngineStatus(self.name, False, bad, self.languages)
        import requests

        try:
            # api_v2 has no health route; any HTTP answer (even 400/404/422) proves the server is up.
            r = requests.get(c.url.rstrip("/") + "/tts", timeout=c.probe_timeout_s)
            code = r.status_code
        except requests.RequestException as err:
            return EngineStatus(self.name, False, f"server {c.url} not reachable ({type(err).__name__})", self.languages)
        where = "" if Path(c.ref_audio).is_file() else " (reference clip not on this machine: length not checked)"
        return EngineStatus(self.name, True, f"api_v2 at {c.url} answered HTTP {code}{where}", self.languages)

    def _post(self, text: str, lang: str, streaming: bool):
        import requests

        bad = check_reference_clip(self.config.ref_audio)
        if bad:
            raise UserFacingError(bad[0].upper() + bad[1:] + ".")
        r = requests.post(self.config.url.rstrip("/") + "/tts", json=self._payload(text, lang, streaming),
                          timeout=self.config.timeout_s, stream=streaming)
        if r.status_code != 200:
            try:
                body = r.json()
                msg = f"{body.get('message', '')} {body.get('Exception', '')}".strip()
            except ValueError:
                msg = r.text[:300]
            raise RuntimeError(f"GPT-SoVITS server answered HTTP {r.status_code}: {msg}")
        return r

    def stream_chunks(self, text: str, lang: str, chunk_bytes: int = 8192) -> Iterator[tuple[np.ndarray, int]]:
        """Yield (float32 chunk, sample_rate) as the server streams them (``streaming_mode``)."""
        r = self._post(text, lang, streaming=True)
        buf, header = b"", None
        with r:
            for piece in r.iter_content(chunk_size=chunk_bytes):
                buf += piece
                if header is None:
                    header = parse_wav_header(buf)
                    if header is None:
                        continue
                    sr, ch, bits, off = header
                    if bits != 16:
                        raise RuntimeError(f"GPT-SoVITS streamed {bits}-bit audio; expected 16-bit PCM")
                    buf = buf[off:]
                sr, ch = self.config.stream_sample_rate or header[0], header[1]
                usable = len(buf) - len(buf) % (2 * ch)
                if usable:
                    pcm = _pcm16(buf[:usable]).reshape(-1, ch).mean(axis=1)  # (n,) mono
                    buf = buf[usable:]
                    yield pcm.astype(np.float32), sr
        if header is None:
            raise RuntimeError("GPT-SoVITS stream ended before any audio header")

    def synthesize(self, text: str, lang: str) -> Speech:
        t0 = time.perf_counter()
        if self.config.streaming:
            chunks, sr = [], 0
            for chunk, chunk_sr in self.stream_chunks(text, lang):
                chunks.append(chunk)
                sr = chunk_sr
            wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        else:
            import soundfile as sf

            r = self._post(text, lang, streaming=False)
            try:
                data, sr = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)  # (n, channels)
            except Exception as err:
                raise RuntimeError(f"GPT-SoVITS answer is not readable audio ({err})") from err
            wave = data.mean(axis=1)
        if len(wave) == 0:
            raise RuntimeError("GPT-SoVITS returned no audio")
        return Speech(wave=wave.astype(np.float32), sample_rate=int(sr), engine=self.name, lang=lang, text=text,
                      seconds_spent=time.perf_counter() - t0, extra={"streaming": self.config.streaming})
