"""Where a spoken turn starts and ends in a live microphone stream: a small energy detector with hysteresis.

Why energy and not a neural VAD: the conversation mode needs two decisions, "the visitor started speaking" (to
stop the avatar at once: barge-in) and "the visitor has paused long enough" (to answer). Both run on every
microphone chunk while lip-sync keeps the CPU busy, so the detector must cost nothing and load nothing (no
weights to download on a Space). A browser's microphone applies echo cancellation and noise suppression, so what
reaches us is speech over a low, steady floor; the level against an adaptive floor separates the two well enough.
What it cannot do: tell speech from loud non-speech (a door, music). The recogniser then returns nothing and the
conversation says so and keeps listening.

The rule (one place; the browser's own barge-in detector is given the same numbers, see :meth:`VADConfig.as_dict`):

* each ``frame_s`` frame's level is its RMS in dBFS;
* the noise floor follows the quietest frames at once and rises slowly (``floor_rise_db_per_s``) when it is
  louder, only while nobody speaks;
* speech starts once ``min_speech_s`` of frames within twice that time are above
  ``max(floor + start_db, min_level_db)`` (not necessarily in a row: syllables dip), at the first of them;
* speech continues while frames are above ``max(floor + stop_db, min_level_db - (start_db - stop_db))`` (the lower
  threshold: the hysteresis), and ends after ``end_silence_s`` below it; the end time is the end of the last voiced
  frame, not the end of the pause;
* an utterance longer than ``max_utterance_s`` is ended there (a question, not a monologue).
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class VADConfig:
    frame_s: float = 0.02
    start_db: float = 15.0  # above the noise floor: speech starts
    stop_db: float = 8.0  # above the noise floor: speech goes on (hysteresis)
    min_level_db: float = -48.0  # never speech below this level, whatever the floor (digital silence, hiss)
    min_speech_s: float = 0.12  # this much loud audio in a row before it counts as speech (clicks do not)
    end_silence_s: float = 0.5  # the pause that ends a turn
    max_utterance_s: float = 20.0
    floor_rise_db_per_s: float = 3.0
    pre_roll_s: float = 0.25  # audio kept from before the start (the first consonant is quieter than the vowel)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class VADEvent:
    """``kind`` "start": speech began at ``t_start``; "end": the utterance ``t_start``..``t_end`` is over.
    Times are seconds of audio since the detector was created."""

    kind: str
    t_start: float
    t_end: float | None = None


def level_db(frame: np.ndarray) -> float:
    """RMS level of float samples in [-1, 1], in dBFS (-100 for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64)))) if frame.size else 0.0
    return 20.0 * np.log10(rms) if rms > 1e-5 else -100.0


def to_float_mono(samples: np.ndarray) -> np.ndarray:
    """Integer PCM or float, mono or (n, channels) -> (n,) float32 in [-1, 1]."""
    x = np.asarray(samples)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        x = x.mean(axis=1) if x.shape[1] <= x.shape[0] else x.mean(axis=0)
    return x.reshape(-1)


class EnergyVAD:
    """Feed samples as they arrive (:meth:`feed`); get "start" and "end" events. Not thread-safe: one per stream."""

    def __init__(self, sample_rate: int, config: VADConfig | None = None):
        self.sr = int(sample_rate)
        self.config = config or VADConfig()
        self.frame = max(1, round(self.config.frame_s * self.sr))
        self._rest = np.zeros(0, np.float32)
        self._t = 0  # samples consumed into frames
        self.floor_db = None  # type: float | None
        self.speaking = False
        self._recent: collections.deque[int] = collections.deque()  # loud (1) or not (0), the last frames
        self._quiet = 0  # quiet frames in a row (during speech)
        self._start = 0  # sample index where the current utterance started
        self._last_voiced_end = 0
        self.last_level_db = -100.0

    @property
    def seconds(self) -> float:
        """Audio seconds decided so far (whole frames)."""
        return self._t / self.sr

    @property
    def received_seconds(self) -> float:
        """Audio seconds fed so far (the decided frames and the part of a frame waiting for more)."""
        return (self._t + len(self._rest)) / self.sr

    def _thresholds(self) -> tuple[float, float]:
        c = self.config
        floor = self.floor_db if self.floor_db is not None else -100.0
        return (max(floor + c.start_db, c.min_level_db),
                max(floor + c.stop_db, c.min_level_db - (c.start_db - c.stop_db)))

    def feed(self, samples: np.ndarray) -> list[VADEvent]:
        """``samples``: the next piece of the stream (any dtype/shape :func:`to_float_mono` takes)."""
        c = self.config
        x = np.concatenate([self._rest, to_float_mono(samples)])
        n = len(x) // self.frame
        self._rest = x[n * self.frame:]
        events: list[VADEvent] = []
        min_run = max(1, round(c.min_speech_s / c.frame_s))
        end_run = max(1, round(c.end_silence_s / c.frame_s))
        rise = c.floor_rise_db_per_s * c.frame_s
        for k in range(n):
            lvl = level_db(x[k * self.frame:(k + 1) * self.frame])
            self.last_level_db = lvl
            start_thr, stop_thr = self._thresholds()
            t1 = self._t + self.frame
            self._t = t1
            if not self.speaking:
                if self.floor_db is None or lvl < self.floor_db:
                    self.floor_db = lvl
                elif lvl < start_thr:
                    self.floor_db = min(lvl, self.floor_db + rise)
                self._recent.append(int(lvl >= start_thr))
                if len(self._recent) > 2 * min_run:
                    self._recent.popleft()
                if sum(self._recent) >= min_run:
                    first_loud = self._recent.index(1)
                    self.speaking = True
                    self._quiet = 0
                    self._start = t1 - (len(self._recent) - first_loud) * self.frame
                    self._last_voiced_end = t1
                    self._recent.clear()
                    events.append(VADEvent("start", self._start / self.sr))
                continue
            if lvl >= stop_thr:
                self._quiet = 0
                self._last_voiced_end = t1
            else:
                self._quiet += 1
            too_long = (t1 - self._start) / self.sr >= c.max_utterance_s
            if self._quiet >= end_run or too_long:
                events.append(VADEvent("end", self._start / self.sr, self._last_voiced_end / self.sr))
                self.speaking = False
                self._quiet = 0
        return events


__all__ = ["EnergyVAD", "VADConfig", "VADEvent", "level_db", "to_float_mono"]
