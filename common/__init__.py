"""Small pieces shared by every package: user-facing errors, settings, Hub file resolution.

Nothing here imports gradio or torch; importing it does no work.
"""

from common.errors import UserFacingError

__all__ = ["UserFacingError"]
