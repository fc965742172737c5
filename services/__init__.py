"""The application layer: what the app does for one request, without the UI.

Layers (each imports only downward; nothing here imports gradio):
``common`` (foundation: errors, settings, Hub resolution) -> ``wav2lip384``, ``qa``, ``tts`` (domain) ->
``services`` (this package: orchestration ``core``, model catalogue ``models``, ``status``, input ``checks``,
``media`` helpers; ``bench`` apart) -> ``app.py`` (Gradio wiring only).
"""

from services.core import CLOSEUP_AVATAR, COMPARE_DEFAULT, DEFAULT_AVATAR, EXAMPLE_VIDEO_AVATAR, EXAMPLES, AppServices
from services.results import AskUpdate, StatusItem, VideoResult

__all__ = ["CLOSEUP_AVATAR", "COMPARE_DEFAULT", "DEFAULT_AVATAR", "EXAMPLE_VIDEO_AVATAR", "EXAMPLES", "AppServices", "AskUpdate", "StatusItem", "VideoResult"]
