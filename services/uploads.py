"""Which files a request may make the app open: the one rule, and the guard that applies it at the door.

What Gradio does (6.31, the newest release on 2026-12-07) and why this layer exists
-----------------------------------------------------------------------------------
An API caller names an input file as ``{"path": ..., "meta": {"_type": "gradio.FileData"}}``. Before a handler
runs, Gradio's ``preprocess_data`` copies that path into its file cache (``processing_utils.async_move_files_to_cache``)
and then serves the copy at ``/gradio_api/file=…``. Its guard, ``processing_utils._check_allowed``, returns early
when no Blocks object is set in the request's context — and in ``Blocks.process_api`` the context is set only
*after* preprocessing (``call_function``). So on the request path the check never runs: ``/etc/passwd`` or any
readable file was copied and handed out, and an ``http://127.0.0.1:…`` "path" is fetched by the server (Gradio skips
the check for URL-like paths and downloads them). A handler cannot tell afterwards: it sees a path inside the cache.

So the rule is applied twice, from one place (:class:`FilePolicy`):

1. :class:`FileDataGuard`, an ASGI middleware passed to ``launch(app_kwargs=...)``, reads every JSON request body
   before Gradio does and refuses (HTTP 400, plain words) any file reference outside the allowed folders —
   nothing is read, copied or fetched.
2. ``app.py`` checks every file argument of every handler again (defence in depth, e.g. for a route or
   encoding the guard does not parse).

Allowed: files under Gradio's upload folder (uploads of this server — named by content hash, so a caller can
only name one it was given — and the copies Gradio makes of the app's own results), the app's ``examples/``,
Gradio's cached examples and the app's own output folder. Everything else — absolute paths elsewhere, ``..``
segments, a link inside an allowed folder that points out of it, ``/proc``, URLs of any scheme — is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from common.errors import UserFacingError

REFUSED = ("This file was not uploaded to this app, so it cannot be used. Upload the file (or pick an example) "
           "and try again. 此文件不是上传到本应用的文件，无法使用，请重新上传。")
# request bodies the guard reads whole; a Gradio call with file references is a few KB
MAX_JSON_BODY = 8 * 2**20


class RefusedFile(UserFacingError):
    """A request named a file the app may not open (the reason is logged, not shown)."""

    def __init__(self, reason: str):
        super().__init__(REFUSED)
        self.reason = reason


def gradio_upload_folder() -> Path:
    """Where Gradio keeps uploads and its file cache (its own rule: ``GRADIO_TEMP_DIR`` or ``<tmp>/gradio``)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def _is_url(value: str) -> bool:
    head = value.strip()[:16].lower()
    return "://" in value or head.startswith(("data:", "file:", "http:", "https:", "ftp:", "//", "\\\\"))


class FilePolicy:
    """Allows a path only when it, and what it resolves to, lie inside one of ``roots``."""

    def __init__(self, roots: Iterable[str | Path]):
        self.roots = tuple(dict.fromkeys(Path(os.path.realpath(Path(r).expanduser())) for r in roots))

    def _inside(self, p: Path) -> bool:
        return any(p == r or r in p.parents for r in self.roots)

    def check(self, path: str | os.PathLike) -> Path:
        """The resolved path if the app may open it, else :class:`RefusedFile` (nothing is read)."""
        if not isinstance(path, (str, os.PathLike)):
            raise RefusedFile(f"not a path: {type(path).__name__}")
        raw = os.fspath(path)
        if isinstance(raw, bytes) or not raw.strip():
            raise RefusedFile("empty or bytes path")
        if "\x00" in raw:
            raise RefusedFile("NUL in path")
        if _is_url(raw):
            raise RefusedFile(f"URL instead of an uploaded file: {raw[:200]!r}")
        if ".." in Path(raw).parts or ".." in raw.replace("\\", "/").split("/"):
            raise RefusedFile(f"'..' in path: {raw[:200]!r}")
        given = Path(os.path.abspath(raw))
        real = Path(os.path.realpath(given))  # follows every link, also of parent folders
        if not (self._inside(given) and self._inside(real)):
            raise RefusedFile(f"outside the allowed folders: {raw[:200]!r} -> {str(real)[:200]!r}")
        return real

    def refusals(self, payload: Any) -> list[str]:
        """Reasons for every file reference in a decoded request body that :meth:`check` refuses."""
        out = []
        for ref in _file_refs(payload):
            try:
                self.check(ref)
            except RefusedFile as err:
                out.append(err.reason)
        return out


def _file_refs(node: Any) -> Iterator[str]:
    """Every value Gradio could treat as a file to open: ``path`` of any object (FileData or not) and the
    ``url`` of a FileData object. Plain strings elsewhere (a question, a model id) are not file references."""
    if isinstance(node, dict):
        if "path" in node and node["path"] is not None:
            yield node["path"] if isinstance(node["path"], str) else repr(node["path"])
        meta = node.get("meta")
        if isinstance(meta, dict) and meta.get("_type") == "gradio.FileData" and node.get("url") and not node.get("path"):
            yield node["url"] if isinstance(node["url"], str) else repr(node["url"])
        for value in node.values():
            yield from _file_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _file_refs(value)


class FileDataGuard:
    """ASGI middleware: refuses a JSON request that names a file outside the policy, before the app sees it.

    Only POST bodies declared as JSON are read (Gradio's ``queue/join``, ``call/…``, ``run/…``); uploads
    (multipart) and everything else pass untouched. The body is handed on unchanged when it is allowed.
    """

    def __init__(self, app, policy: FilePolicy, log=None):
        self.app = app
        self.policy = policy
        self.log = log

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or scope.get("method") != "POST" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_JSON_BODY:
                await _respond(send, 413, "The request is too large.")
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError:
            payload = None  # not ours to judge: Gradio answers malformed JSON itself
        reasons = self.policy.refusals(payload) if payload is not None else []
        if reasons:
            if self.log is not None:
                self.log.warning("refused a request to %s naming files outside the upload folders: %s",
                                 scope.get("path"), "; ".join(reasons[:5]))
            await _respond(send, 400, REFUSED)
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def _is_json(scope) -> bool:
    for name, value in scope.get("headers") or ():
        if name.lower() == b"content-type":
            return b"json" in value.lower()
    return False


def _replay(messages, upstream):
    """The messages already read, then the real ones (a streaming response waits on the real disconnect)."""
    pending = list(messages)

    async def receive():
        if pending:
            return pending.pop(0)
        return await upstream()

    return receive


async def _respond(send, status: int, message: str) -> None:
    # Gradio's own error shape ({"detail": ...}) so clients show the message
    body = json.dumps({"detail": message, "error": message}, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
