"""Keeping up with the voice: the output frame rate a streamed answer renders at, chosen from measured speed.

A streamed answer must never pause: its video has to be made at least as fast as it plays. What a chunk costs
depends on the machine (native bf16 or not, other work on it) and is only known by rendering, so
:class:`FramePace` keeps two measured figures (from earlier renders of the same pipeline and avatar kind, e.g. the
start-up warm-up, then from each chunk as it is rendered): wall seconds per output frame, and the fixed cost of a
chunk (starting and finishing its encoder: measured ~0.25 s on a loaded 2-core machine, so many tiny chunks
fall behind however fast each frame is). Before each chunk it picks the highest frame rate that renders faster
than real time with a margin: every frame (25 fps for a photo), else every second frame (12.5 fps), else every
third (8.3 fps; the audio is untouched, each chunk lasts as long as its speech). When even that is too slow it says
so (``keeps_up`` is False): the caller then buffers more before playback and offers a cheaper model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# render every frame, every second or every third one (25 -> 12.5 -> 8.3 fps). The third step is for CPUs where
# even 12.5 fps does not keep up once the page and Gradio's per-chunk conversion share the two cores: on a 2-core
# AVX2-only EPYC (no AVX-512; int8 wav2lip96 at 44 ms a frame) answers at 12.5 fps played with 10-19 waits each
STEPS = (1, 2, 3)
HEADROOM = 1.6  # a frame rate is chosen only if its model time is this much faster than real time (see below)
# ... and every frame (25 fps) for an answer's first chunk, this much: that chunk's render is part of the wait for
# the first frame, and a rate kept by less was mostly dropped after it anyway (the page's own work, on the same 2
# cores, slows the model from the warm-up's speed): AVX2 class, browser bench, first chunks at 25 fps took
# 1.1-1.25 s, at 12.5 fps 0.4-0.6 s
START_HEADROOM = 2.0
SMOOTHING = 0.5  # weight of the newest measurement in the running estimates
REST_FRAME_COST = 0.25  # a rest-pose frame of a pause (no model) counted as this fraction of a model frame
TYPICAL_CHUNK_S = 2.0  # the chunk length a frame rate is judged on (later chunks hold 1-3 s of speech)
# pieces are long enough that a chunk is rendered and on its way out this much faster than it plays (see
# FramePace.shortest_piece_s): each chunk also costs a fixed time, and time on its way out while nothing renders
THROUGHPUT = 1.25


def frame_cost(frames: int, model_frames: int, wall_s: float, fixed_s: float = 0.0) -> float | None:
    """Wall seconds per output frame that runs the model, from one render of ``frames`` frames of which
    ``model_frames`` ran it (the others, rest-pose frames of a pause, counted at ``REST_FRAME_COST``: a chunk that
    was mostly pause must not make the next one look cheap), less ``fixed_s`` spent starting and finishing the
    chunk. None when nothing ran the model."""
    if frames <= 0 or wall_s <= 0 or model_frames <= 0:
        return None
    return max(wall_s - fixed_s, 1e-6) / (model_frames + REST_FRAME_COST * (frames - model_frames))


def _smooth(old: float | None, new: float) -> float:
    return new if old is None else (1 - SMOOTHING) * old + SMOOTHING * new


@dataclass
class FramePace:
    """Measured render speed and the frame-rate step chosen from it (see the module docstring).

    ``frame_s``: wall seconds per output frame measured before (None: unknown, render every frame and measure);
    ``fixed_s``: seconds a chunk costs whatever its length. ``base_fps``: the avatar's frame rate (25 for a
    photo), set by the stream once the avatar is open.
    """

    frame_s: float | None = None
    fixed_s: float = 0.0
    base_fps: float = 25.0
    steps: tuple[int, ...] = STEPS
    headroom: float = HEADROOM
    step: int = 1
    history: list[dict] = field(default_factory=list)  # one entry per rendered chunk (for logs and tests)
    # once playback has begun the frame rate may still drop to keep up, but not rise again: the speed measured
    # here is the model's, and the rise it promised was eaten by what each chunk costs on its way to the player
    # (AVX2 class, browser bench: an answer that went back to 25 fps mid-way waited 0.8 s three times more)
    no_rise: bool = False
    # seconds each chunk spends on its way out while nothing renders (the caller's step: the app's Gradio converts a
    # chunk to an HLS segment before it asks for the next one; measured 0.40-0.47 s a chunk on an idle AVX2-only
    # 2-core EPYC), 0 where unknown; set by the caller (record_delivery)
    delivery_s: float = 0.0

    def __post_init__(self):
        if self.step not in self.steps:
            self.step = min(self.steps)

    @property
    def fps(self) -> float:
        """The output frame rate now chosen."""
        return self.base_fps / self.step

    def seconds_to_render(self, seconds: float, step: int | None = None) -> float | None:
        """Wall seconds to render a chunk of ``seconds`` of speech at ``step``; None before any measurement."""
        if not self.frame_s:
            return None
        return self.fixed_s + self.frame_s * seconds * self.base_fps / (step or self.step)

    def rate(self, step: int | None = None, seconds: float = TYPICAL_CHUNK_S) -> float | None:
        """Seconds of video rendered per wall second at ``step`` (default: the chosen one) in chunks of
        ``seconds``; None before any measurement."""
        wall = self.seconds_to_render(seconds, step)
        return None if wall is None else seconds / max(wall, 1e-9)

    def seconds_within(self, wall_s: float, step: int | None = None) -> float:
        """The most seconds of speech one chunk may hold to be rendered within ``wall_s`` (0 if none)."""
        if not self.frame_s:
            return 0.0
        return max(0.0, (wall_s - self.fixed_s) * (step or self.step) / (self.frame_s * self.base_fps))

    def record_delivery(self, seconds: float) -> None:
        """One chunk's way out took ``seconds`` (see ``delivery_s``)."""
        self.delivery_s = seconds if not self.delivery_s else _smooth(self.delivery_s, seconds)

    def shortest_piece_s(self, floor: float, cap: float) -> float:
        """The fewest seconds of speech per chunk for chunks to be made ``THROUGHPUT`` times faster than they play
        at the chosen rate: ``L / (L * c + o) >= THROUGHPUT``, ``c`` the wall seconds a second of speech costs to
        render, ``o`` what every chunk costs besides (``fixed_s + delivery_s``); at least ``floor``, at most ``cap``
        (also when no length gets there). ``floor`` before anything is measured."""
        if not self.frame_s:
            return floor
        per_second = self.frame_s * self.base_fps / self.step
        spare = 1.0 - THROUGHPUT * per_second
        if spare <= 0:
            return cap
        return float(min(cap, max(floor, THROUGHPUT * (self.fixed_s + self.delivery_s) / spare)))

    def choose(self) -> int:
        """The smallest step (highest frame rate) that renders ``headroom`` times faster than real time (every
        frame, for an answer's first chunk: ``START_HEADROOM``), else the largest step; unchanged while nothing has
        been measured. Called by the stream before each chunk."""
        if self.frame_s:
            first = self.steps[0] if not self.history else None
            fast = [s for s in self.steps
                    if self.rate(s) >= (max(self.headroom, START_HEADROOM) if s == first else self.headroom)]
            chosen = fast[0] if fast else max(self.steps)
            self.step = max(chosen, self.step) if self.no_rise else chosen
        return self.step

    @property
    def keeps_up(self) -> bool:
        """Whether the chosen frame rate renders at least as fast as real time (True while unmeasured)."""
        rate = self.rate()
        return rate is None or rate >= 1.0

    def record(self, frames: int, model_frames: int, wall_s: float, fixed_s: float = 0.0) -> None:
        """One chunk rendered: ``frames`` output frames (``model_frames`` of them through the model, the others
        rest-pose frames of a pause) in ``wall_s``, ``fixed_s`` of it starting and finishing the chunk (see
        :func:`frame_cost`)."""
        per = frame_cost(frames, model_frames, wall_s, fixed_s)
        if per is not None:
            self.frame_s = _smooth(self.frame_s, per)
        if frames > 0 and wall_s > 0:
            self.fixed_s = _smooth(self.fixed_s if self.history or self.fixed_s else None, fixed_s)
        self.history.append({"frames": frames, "model_frames": model_frames, "wall_s": round(wall_s, 4),
                             "fixed_s": round(fixed_s, 4), "step": self.step, "fps": self.fps})

    def describe(self) -> str:
        """What was chosen, in plain words (for the page's timing line); "" at the full frame rate."""
        if self.step == 1:
            return ""
        return f"rendering at {round(self.fps, 1):g} frames per second to keep up with the voice"
