"""Keeping up with the voice: the output frame rate a streamed answer renders at, chosen from measured speed.

A streamed answer must never pause: its video has to be made at least as fast as it plays. What a frame costs
depends on the machine (native bf16 or not, other work on it) and is only known by rendering, so
:class:`FramePace` keeps the measured wall seconds per output frame (from earlier renders of the same pipeline
and avatar kind, e.g. the start-up warm-up, then from each chunk as it is rendered) and, before each chunk,
picks the highest frame rate that renders faster than real time with a margin: every frame (25 fps for a photo),
else every second frame (12.5 fps; the audio is untouched, each chunk lasts as long as its speech). When even
that is too slow it says so (``keeps_up`` is False): the caller then buffers more before playback and offers a
cheaper model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STEPS = (1, 2)  # render every frame, or every second one (25 -> 12.5 fps)
HEADROOM = 1.15  # a frame rate is chosen only if it renders this much faster than real time
SMOOTHING = 0.5  # weight of the newest measurement in the running estimate
REST_FRAME_COST = 0.25  # a rest-pose frame of a pause (no model) counted as this fraction of a model frame


def frame_cost(frames: int, model_frames: int, wall_s: float) -> float | None:
    """Wall seconds per output frame that runs the model, from one render of ``frames`` frames of which
    ``model_frames`` ran it (the others, rest-pose frames of a pause, counted at ``REST_FRAME_COST``: a chunk that
    was mostly pause must not make the next one look cheap). None when nothing ran the model."""
    if frames <= 0 or wall_s <= 0 or model_frames <= 0:
        return None
    return wall_s / (model_frames + REST_FRAME_COST * (frames - model_frames))


@dataclass
class FramePace:
    """Measured render speed and the frame-rate step chosen from it (see the module docstring).

    ``frame_s``: wall seconds per rendered output frame measured before (None: unknown, render every frame and
    measure). ``base_fps``: the avatar's frame rate (25 for a photo), set by the stream once the avatar is open.
    """

    frame_s: float | None = None
    base_fps: float = 25.0
    steps: tuple[int, ...] = STEPS
    headroom: float = HEADROOM
    step: int = 1
    history: list[dict] = field(default_factory=list)  # one entry per rendered chunk (for logs and tests)

    def __post_init__(self):
        if self.step not in self.steps:
            self.step = min(self.steps)

    @property
    def fps(self) -> float:
        """The output frame rate now chosen."""
        return self.base_fps / self.step

    def rate(self, step: int | None = None) -> float | None:
        """Seconds of video rendered per wall second at ``step`` (default: the chosen one); None before any
        measurement."""
        if not self.frame_s:
            return None
        return (step or self.step) / (self.base_fps * self.frame_s)

    def choose(self) -> int:
        """The smallest step (highest frame rate) that renders ``headroom`` times faster than real time, else the
        largest step; unchanged while nothing has been measured. Called by the stream before each chunk."""
        if self.frame_s:
            fast = [s for s in self.steps if self.rate(s) >= self.headroom]
            self.step = fast[0] if fast else max(self.steps)
        return self.step

    @property
    def keeps_up(self) -> bool:
        """Whether the chosen frame rate renders at least as fast as real time (True while unmeasured)."""
        rate = self.rate()
        return rate is None or rate >= 1.0

    def record(self, frames: int, model_frames: int, wall_s: float) -> None:
        """One chunk rendered: ``frames`` output frames (``model_frames`` of them through the model, the others
        rest-pose frames of a pause) in ``wall_s`` (see :func:`frame_cost`)."""
        per = frame_cost(frames, model_frames, wall_s)
        if per is not None:
            self.frame_s = per if self.frame_s is None else (1 - SMOOTHING) * self.frame_s + SMOOTHING * per
        self.history.append({"frames": frames, "model_frames": model_frames, "wall_s": round(wall_s, 4),
                             "step": self.step, "fps": self.fps})

    def describe(self) -> str:
        """What was chosen, in plain words (for the page's timing line); "" at the full frame rate."""
        if self.step == 1:
            return ""
        return f"rendering at {self.fps:g} frames per second to keep up with the voice"
