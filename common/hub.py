"""Resolve model files from a local path or a Hugging Face Hub repo, failing fast and clearly offline.

``huggingface_hub.hf_hub_download`` retries for ~25 s when there is no network and then raises a
generic error. Users of a Space or of this repo offline deserve a one-line answer instead, so we:
1. accept a local file path as-is;
2. try the local HF cache first (``local_files_only=True``; instant);
3. probe DNS for the Hub endpoint (short timeout) before downloading; a failure is re-probed after 30 s;
4. turn any failure into a :class:`~common.errors.UserFacingError` that names the repo, the file and
   how to supply the file locally (``how_to_fix``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from common.errors import UserFacingError


@dataclass(frozen=True)
class HubFile:
    """A file in a Hub repo. ``spec`` strings look like ``owner/name:path/in/repo.pth``."""

    repo_id: str
    filename: str
    revision: str | None = None

    @classmethod
    def parse(cls, spec: str, default_filename: str | None = None) -> HubFile:
        repo, sep, filename = spec.partition(":")
        if not sep:
            if default_filename is None:
                raise UserFacingError(f"{spec!r}: expected 'owner/name:path/to/file'.")
            filename = default_filename
        if repo.count("/") != 1:
            raise UserFacingError(f"{spec!r} is neither an existing file nor a Hub repo 'owner/name'.")
        return cls(repo, filename)

    def __str__(self) -> str:
        return f"{self.repo_id}:{self.filename}"


def _probe_dns(timeout_s: float) -> bool:
    """True when the Hub endpoint's host name resolves within ``timeout_s``.

    ``getaddrinfo`` ignores socket timeouts, so it runs in a daemon thread we stop waiting for: a network
    whose DNS hangs costs ``timeout_s``, not minutes.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    outcome: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo(host, 443)
            outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=probe, name="hub-dns-probe", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return bool(outcome and outcome[0])


class _Reachability:
    """Whether the Hub can be reached, probed at most once per ``retry_after_s`` after a failure.

    A success is kept for the life of the process; a failure only for ``retry_after_s`` (one DNS hiccup at boot
    must not disable the Hub until a restart). Callers use the module's one instance, :data:`hub_reachable`.
    """

    def __init__(self, retry_after_s: float = 30.0):
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._state: tuple[bool, float] | None = None  # (reachable, monotonic time of the probe)

    def __call__(self, timeout_s: float = 2.0) -> bool:
        with self._lock:
            state = self._state
            if state is not None and (state[0] or time.monotonic() - state[1] < self.retry_after_s):
                return state[0]
        ok = _probe_dns(timeout_s)  # outside the lock: a hanging DNS must not block other threads' cached answers
        with self._lock:
            self._state = (ok, time.monotonic())
        return ok

    def cache_clear(self) -> None:
        with self._lock:
            self._state = None


hub_reachable = _Reachability()


def resolve_file(spec: str | os.PathLike, *, default_filename: str | None = None, what: str = "file",
                 how_to_fix: str = "") -> Path:
    """Return a local path for ``spec`` (a path, or ``owner/name[:file]`` on the Hub).

    Raises :class:`UserFacingError` naming ``what`` was wanted and ``how_to_fix`` when it cannot be had.
    """
    path = Path(os.fspath(spec)).expanduser()
    if path.is_file():
        return path
    if path.suffix and (path.is_absolute() or str(spec).startswith(".")):
        raise UserFacingError(f"{what}: no file at {path}. {how_to_fix}".strip())
    hub = HubFile.parse(str(spec), default_filename)

    from huggingface_hub import hf_hub_download  # imported lazily: import-time work stays nil

    try:
        return Path(hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision, local_files_only=True))
    except Exception:  # not cached: fall through to the network
        pass
    if not hub_reachable():
        raise UserFacingError(
            f"{what}: the Hugging Face Hub is not reachable from here and {hub} is not in the local cache. "
            f"{how_to_fix}".strip()
        )
    try:
        return Path(hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision))
    except Exception as err:  # gated, missing, network error mid-way: say which and how to fix
        raise UserFacingError(f"{what}: could not download {hub} ({type(err).__name__}: {err}). "
                              f"{how_to_fix}".strip()) from err


def resolve_snapshot(spec: str | os.PathLike, *, what: str = "model", how_to_fix: str = "",
                     allow_patterns: list[str] | None = None) -> Path:
    """Return a local directory for ``spec`` (a directory, or a Hub repo ``owner/name``).

    Same policy as :func:`resolve_file`: local directory, then cache, then network if reachable.
    """
    path = Path(os.fspath(spec)).expanduser()
    if path.is_dir():
        return path
    repo_id = str(spec)
    if repo_id.count("/") != 1 or path.is_absolute() or repo_id.startswith("."):
        raise UserFacingError(f"{what}: {spec!r} is neither a directory nor a Hub repo 'owner/name'. {how_to_fix}".strip())

    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=allow_patterns))
    except Exception:
        pass
    if not hub_reachable():
        raise UserFacingError(
            f"{what}: the Hugging Face Hub is not reachable from here and {repo_id} is not in the local cache. "
            f"{how_to_fix}".strip()
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns))
    except Exception as err:
        raise UserFacingError(f"{what}: could not download {repo_id} ({type(err).__name__}: {err}). "
                              f"{how_to_fix}".strip()) from err
