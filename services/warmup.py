"""Warm-up: pay every one-off cost at start-up (app.py runs it in a thread), so the first visitor does not."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from services.rendering import DEFAULT_AVATAR
from wav2lip384.models import registry
from wav2lip384.render.pacing import FramePace

log = logging.getLogger(__name__)

WARM_QUESTION = "身份证丢了怎么补办？"  # one question through the assistant at start-up (any question will do)


class WarmUpServices:
    """Loads the audio path, the voice, the assistant (and asks it one question), the default model (and renders
    once on the default avatar) and the speech recogniser (and transcribes once). Needs the other use cases
    (``tts``, ``ask``, ``weights``, ``pipeline``, ``default_model``, ``speech_recognition``, ``recognizer``)."""

    def warm_up(self, models: tuple[str, ...] | None = None) -> dict[str, float]:
        """Pay every one-off cost now (app start-up runs this in a thread): the audio path (librosa/numba), the
        voice, the assistant's index and first question, the default lip-sync model (its weights download here,
        with progress in Status) and, last, the speech recogniser where it is available. Returns seconds per part; a part that fails is logged and reported again at its first use."""
        from tts.warmup import warm_up as warm_tts
        from wav2lip384.media.audio import warm_up as warm_audio

        models = models if models is not None else (self.default_model(prefer=registry.preferred("answer")),)
        parts: list[tuple[str, Callable[[], Any]]] = [
            ("audio path", warm_audio), ("voice", lambda: warm_tts(self.tts())), ("assistant", self._warm_assistant)]
        for m in (m for m in models if self.weights(m)[0]):
            # the model, then one short render of the default avatar: face detection, crops, encoder features, the
            # first run of each layer and the video writer are then paid (measured: the first chunk of the first
            # answer took 10 s for 0.6 s of speech without this, 1.5 s with it)
            parts += [(m, lambda m=m: self.pipeline(m)),
                      (f"{m} on the default avatar", lambda m=m: self._warm_render(m))]
        parts.append(("speech recognition", self._warm_recognizer))  # last: the Ask tab's answer comes first
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        for name, load in parts:
            t = time.perf_counter()
            try:
                load()
            except Exception as err:  # reported in the status panel and again at the first request
                log.warning("warm-up: %s not ready: %s", name, err)
            seconds[name] = round(time.perf_counter() - t, 2)
        log.info("warm-up done in %.1f s (%s)", time.perf_counter() - t0,
                 ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
        return seconds

    def _warm_assistant(self) -> None:
        """The assistant's index, and one question through it (its first answer took 45 ms, the next ones 17-28 ms,
        in-process on a bf16 2-core EPYC)."""
        self.ask(WARM_QUESTION)

    def _warm_recognizer(self) -> None:
        """Where spoken questions can be understood here: the recogniser's weights (it loads them at its first
        transcription; downloaded now where the Hub is reachable, as the first spoken question would do) and one
        transcription of a second of a quiet tone. Unavailable here: nothing."""
        if not self.speech_recognition().available:
            return
        t = np.arange(16000, dtype=np.float32) / 16000.0
        self.recognizer().transcribe(((0.05 * np.sin(2 * np.pi * 200.0 * t)).astype(np.float32), 16000))

    def _warm_render(self, model: str) -> None:
        """Lip-sync one second of a voiced tone on the default avatar, then stream it the way an answer streams
        (chunks with lossless audio, at both frame rates an answer may be rendered at): every one-off cost of
        the Ask path is paid, and the pipeline has measured its speed before the first answer (its pace starts
        from that). The output is thrown away."""
        t = np.arange(16000, dtype=np.float32) / 16000.0
        tone = (0.3 * np.sin(2 * np.pi * 180.0 * t) * (1.0 + np.sin(2 * np.pi * 3.0 * t))).astype(np.float32)
        out_dir = self.dirs.new("warm-")
        try:
            pipe = self.pipeline(model)
            if self.settings.calibrate_int8:
                # int8 calibrated on the default avatar's own frames, taken only if faster and verified (and, with
                # published weights, through the lip-sync check); before the speed is measured below
                decision = pipe.calibrate(DEFAULT_AVATAR)
                log.info("warm-up: %s computes in %s", model, decision.get("chosen", decision.get("dtype", "?")))
            pipe(DEFAULT_AVATAR, (tone, 16000), out_dir / "warm.mp4")  # first runs of every layer
            for step in (2, 1):  # the last measurement (every frame) is what the first answer starts from
                pace = FramePace(steps=(step,))
                list(pipe.stream(DEFAULT_AVATAR, [(tone[:8000], 16000), (tone[8000:], 16000)],
                                 out_dir / f"stream{step}", pace=pace))
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
