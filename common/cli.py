"""Command-line entry points: one place for "a user error prints one line and exits with status 2"."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from common.errors import UserFacingError


def user_errors_exit_2(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a CLI ``main``: a :class:`UserFacingError` raised in it prints ``error: <message>`` on stderr
    and returns 2 (no traceback: the message already says what to fix). Other exceptions propagate."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserFacingError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapper
