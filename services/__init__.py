"""The application layer: what the app does for one request, without the UI.

Layers (each imports only downward; nothing here imports gradio):
``common`` (foundation: errors, settings, Hub resolution) -> ``wav2lip384``, ``qa``, ``tts`` (domain) ->
``services`` (this package: the facade ``core`` over the use cases ``speech``, ``rendering``, ``answering``,
``warmup``, ``status``; model catalogue ``models``, input ``checks``, ``media`` helpers; ``bench`` apart) ->
``app.py`` (Gradio wiring only; ``presenters.py`` beside it turns the typed results into text).
"""

from services.core import CLOSEUP_AVATAR, COMPARE_DEFAULT, DEFAULT_AVATAR, EXAMPLE_VIDEO_AVATAR, EXAMPLES, AppServices
from services.results import AskUpdate, StatusItem, VideoResult

__all__ = ["CLOSEUP_AVATAR", "COMPARE_DEFAULT", "DEFAULT_AVATAR", "EXAMPLE_VIDEO_AVATAR", "EXAMPLES", "AppServices", "AskUpdate", "StatusItem", "VideoResult"]
