"""Plain data the services hand to the UI (and to API clients): status rows, rendered videos, answer updates.

No markdown or emoji here: the UI's presenters (``presenters.py`` next to app.py) turn these into text. The small
results are named tuples, so their fields are read by name and they still unpack like the pairs they were."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple


@dataclass(frozen=True)
class StatusItem:
    """One row of the Status panel: which part, whether it works, what is active, what to do if not."""

    part: str
    ok: bool
    active: str
    fix: str = ""
    details: str = ""  # engineering detail (repo, file, hash, backend) shown in a collapsed panel


@dataclass
class VideoResult:
    """One rendered talking-avatar video, with the figures a visitor understands."""

    path: Path | None  # None when lip-sync could not run (the speech is still delivered, see audio_path)
    model: str  # registry id, e.g. "wav2lip256"
    model_title: str
    img_size: int
    seconds: float  # wall time of the whole request (speech + lip-sync + encoding)
    fps: float  # frames per second of the video
    n_frames: int
    duration_s: float
    render_fps: float  # frames rendered per second of wall time
    clarity: float | None = None  # mouth sharpness: variance of the Laplacian over the mouth (higher = sharper)
    detector: str = ""
    engine: str = ""  # TTS engine that spoke, when the input was text
    precision: str = ""  # the generator's compute dtype (bf16 only where native and verified)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # everything the pipeline had to adjust, in plain words
    notes: list[str] = field(default_factory=list)  # what is for the operator (e.g. the face detector): details only
    audio_path: Path | None = None  # the speech as audio (always set for text input)
    notice: str = ""  # why there is no video (lip-sync unavailable), said once, calmly and in plain words
    problem: str = ""  # the technical reason behind the notice (repo, file, variable): details and log only
    source: str = ""  # where the model's weights come from
    license: str = ""

    def details(self) -> dict[str, Any]:
        """Engineering details for the collapsed panel."""
        out = {"model": self.model, "weights": self.source, "license": self.license, "frames": self.n_frames,
               "video_fps": self.fps, "face_detector": self.detector, "model_precision": self.precision,
               "timings_s": {k: round(v, 3) for k, v in self.timings.items()}}
        if self.problem:
            out["lipsync_problem"] = self.problem
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = None if self.path is None else str(self.path)
        d["audio_path"] = None if self.audio_path is None else str(self.audio_path)
        return d


@dataclass
class AskUpdate:
    """One step of ``AppServices.ask_stream``: first the answer alone, then one video chunk at a time."""

    answer: Any  # qa.Answer
    chunk: Path | None = None
    index: int = -1  # chunk number, -1 for the answer-only update
    seconds_to_answer: float = 0.0
    seconds_to_first_chunk: float | None = None
    seconds_to_first_speech: float | None = None  # the first sentence synthesised (inside the first chunk time)
    final_video: Path | None = None  # set on the last update: all chunks joined
    audio: Path | None = None  # the spoken answer as audio (set when lip-sync cannot run, and on the last update)
    engine: str = ""
    model: str = "wav2lip96"
    notice: str = ""  # lip-sync unavailable / failed: the answer is still spoken (audio); plain words
    problem: str = ""  # the technical reason behind the notice: details and log only
    warnings: list[str] = field(default_factory=list)
    done: bool = False  # the last update of this answer
    speech_seconds: float | None = None  # length of the spoken answer (set on the last update)
    # while chunks are held back (rendering is not yet safely ahead of playback): seconds of video rendered so far
    # and of the whole answer, so the page can say how far along it is
    rendered_seconds: float | None = None
    total_seconds: float | None = None
    # what the render chose to keep up with the voice, in plain words ("" when nothing had to give): a lower frame
    # rate, and a quicker model when even that is slower than the voice
    render_note: str = ""
    # set on the update carrying the answer's last chunk (the next, ``done``, one follows as soon as the chunks
    # are joined): a streaming player can then take that chunk and the end of the stream together
    last_chunk: bool = False
    # the chunk as an HLS segment with the answer's own audio, ready to serve (``ask_stream(segments=True)``)
    segment: Any = None  # services.segments.Segment


class RecognizerState(NamedTuple):
    """Whether spoken questions can be understood here, and the technical detail (for Status -> Details)."""

    available: bool
    detail: str


class Transcript(NamedTuple):
    """A spoken question as text, and the language it was recognised in."""

    text: str
    lang: str


class AvatarCheck(NamedTuple):
    """A checked avatar upload: its path and whether it is an "image" or a "video"."""

    path: Path
    kind: str


class SynthesizedSpeech(NamedTuple):
    """Text spoken by the voice: 16 kHz mono for lip-sync, and the voice's own result (``tts`` Speech: engine ...)."""

    wave: Any  # np.ndarray, float32
    speech: Any  # tts Speech
