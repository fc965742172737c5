"""The one exception type whose message is meant for the person using the app or a CLI."""


class UserFacingError(ValueError):
    """Bad input or a missing resource, explained in words a user can act on.

    The app shows ``str(err)`` verbatim (as ``gr.Error``); CLIs print it and exit with status 2.
    Raise it for anything the *user* can fix (wrong file, no face, empty question, missing weights);
    let programming errors raise their ordinary exceptions.
    """


class ModelUnavailableError(UserFacingError):
    """A model's weights cannot be had (not configured, not downloadable here, unreadable).

    The app degrades instead of failing: the answer is still shown and spoken, with this message as the
    notice. Input problems (no face, silent audio) stay plain :class:`UserFacingError`: the visitor can fix those.
    """
