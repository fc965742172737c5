"""What the app does, without the UI: text / speech / a question in, a talking avatar (or at least speech) out.

``app.py`` only wires Gradio components to :class:`AppServices`; everything here is plain Python so it is tested
without gradio. :class:`AppServices` is a thin facade over the use cases, one module each:
:mod:`services.speech` (voice, recordings, spoken questions), :mod:`services.rendering` (avatars, lip-sync, the
Compare tab, examples, degrading to speech), :mod:`services.answering` (the assistant, the streamed spoken answer),
:mod:`services.warmup` (start-up) and :mod:`services.status` (the Status rows). They return typed results
(:mod:`services.results`); the UI formats them (``presenters.py``).

Models load lazily on first use and are kept for the life of the process (one instance per app). Every request
gets its own temporary directory under one root: intermediates (speech, chunks) live there; the finished video
stays until Gradio has copied it into its own cache, and directories older than ``keep_outputs_s`` are swept at
the next request and all of them at exit.
"""

from __future__ import annotations

from pathlib import Path

from common.settings import Settings
from services.answering import AnsweringServices
from services.media import RequestDirs
from services.models import ModelCatalog
from services.rendering import (
    CLOSEUP_AVATAR,
    COMPARE_DEFAULT,
    DEFAULT_AVATAR,
    EXAMPLE_VIDEO_AVATAR,
    EXAMPLES,
    RenderingServices,
)
from services.results import StatusItem
from services.scores import CompareScores
from services.speech import SpeechServices
from services.warmup import WarmUpServices

__all__ = ["CLOSEUP_AVATAR", "COMPARE_DEFAULT", "DEFAULT_AVATAR", "EXAMPLE_VIDEO_AVATAR", "EXAMPLES", "AppServices"]


class AppServices(SpeechServices, RenderingServices, AnsweringServices, WarmUpServices):
    """Everything the app does, composed of its use cases. Thread-safe: Gradio calls it from worker threads.

    ``settings`` is read once (``Settings.from_env()`` in app.py); nothing here reads the environment.
    """

    def __init__(self, settings: Settings, *, tmp_parent: str | Path | None = None, keep_outputs_s: float = 900.0):
        self.settings = settings
        self.cache_dir = Path(settings.cache_dir).expanduser()
        self.dirs = RequestDirs(tmp_parent, keep_s=keep_outputs_s)
        self.models = ModelCatalog(settings, self.cache_dir,
                                   gate_clip=(DEFAULT_AVATAR, EXAMPLES / "speech_en.ogg"))
        # one lock per part: a first-time index build (minutes on a Space) must not hold up the voice or video
        self._init_speech()
        self._init_rendering()
        self._init_answering()
        self.scores = CompareScores(settings, self.face_detector)  # the Compare tab's lip-sync and mouth figures

    def close(self) -> None:
        self.dirs.close()

    # ---- models (delegated; kept here so the UI talks to one object) ------------------------------
    def weights(self, model: str | int) -> tuple[bool, str]:
        return self.models.weights(model)

    def available_models(self) -> list[str]:
        return self.models.available()

    def pipeline(self, model: str | int, progress=None):
        return self.models.pipeline(model, progress)

    def face_detector(self):
        return self.models.detector()

    # ---- status -------------------------------------------------------------------------------------
    def status(self) -> list[StatusItem]:
        from services.status import status_items

        return status_items(self)
