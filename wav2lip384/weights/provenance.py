"""Which weights exactly: Hub repo, file, commit and sha256 (the cached blob's name), or a local path and its
sha256, found without downloading and without reading a multi-GB file on every look (for the Status panel
and the load record)."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

from wav2lip384.weights.cache import _cache_file, _copy_meta
from wav2lip384.weights.io import _locate

_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1_NAME = re.compile(r"[0-9a-f]{40}")
HASH_NOW_BYTES = 64 * 2**20  # files up to this size are hashed when first asked for; larger ones when loaded


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in chunks (``hashlib.file_digest``: constant memory for a 2 GB file)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class HubCachedFile:
    """A Hub file in the local Hugging Face cache: ``<cache>/models--owner--name/snapshots/<commit>/<file>``, on
    Unix a symlink to ``<cache>/models--owner--name/blobs/<etag>``. The Hub's etag of an LFS file is its
    sha256; of a small file kept in git (not LFS), its git blob id (sha1 of "blob <size>\\0" + content)."""

    path: Path  # the snapshot file
    revision: str  # the commit it was downloaded at
    blob: str  # the blob's name ("" when the snapshot holds a copy, not a link: symlinks unsupported)

    @property
    def sha256(self) -> str:
        return self.blob if _SHA256_NAME.fullmatch(self.blob) else ""

    @property
    def git_sha1(self) -> str:
        return self.blob if _GIT_SHA1_NAME.fullmatch(self.blob) else ""


def hub_cached_file(repo: str, filename: str) -> HubCachedFile | None:
    """The cached copy of Hub file ``repo``:``filename`` at the ``main`` ref, or None; never downloads and never
    reads the file (``huggingface_hub.try_to_load_from_cache`` resolves ``refs/main`` to the commit)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo, filename)
    except Exception:  # malformed repo id or file name
        return None
    if not isinstance(cached, str) or not os.path.isfile(cached):
        return None
    path = Path(cached)
    snapshot = path.parents[len(Path(filename).parts) - 1]  # .../snapshots/<commit>
    return HubCachedFile(path, snapshot.name, _blob_name(path))


def _blob_name(path: str | os.PathLike) -> str:
    """The name of the Hugging Face cache blob ``path`` is (a snapshot's link resolved; "" for any other file,
    e.g. a snapshot holding a copy where symlinks are unsupported)."""
    real = Path(os.path.realpath(path))
    return real.name if real.parent.name == "blobs" else ""


def hub_blob_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file in the Hugging Face cache, read off its blob's name ("" for any other file)."""
    name = _blob_name(path)
    return name if _SHA256_NAME.fullmatch(name) else ""


class FileHashes:
    """sha256 digests of weight files, each computed at most once while the file is unchanged (keyed by real
    path, size and modification time). Thread-safe and bounded (least recently used dropped); one instance per
    owner (the app's model catalogue), never a module global. Two threads asking for the same new file at once
    may both hash it: harmless, and not worth a wait queue for what happens once per file."""

    def __init__(self, max_entries: int = 32):
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._digests: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._busy: set[tuple[str, int, int]] = set()  # being hashed now

    @staticmethod
    def _key(path: str | os.PathLike) -> tuple[str, int, int]:
        real = os.path.realpath(path)
        st = os.stat(real)
        return real, st.st_size, st.st_mtime_ns

    def get(self, path: str | os.PathLike) -> str:
        """The known digest of ``path`` ("" when not hashed yet or changed since)."""
        key = self._key(path)
        with self._lock:
            digest = self._digests.get(key, "")
            if digest:
                self._digests.move_to_end(key)
            return digest

    def busy(self, path: str | os.PathLike) -> bool:
        key = self._key(path)
        with self._lock:
            return key in self._busy

    def put(self, path: str | os.PathLike, digest: str) -> None:
        self._put(self._key(path), digest)

    def _put(self, key: tuple[str, int, int], digest: str) -> None:
        with self._lock:
            self._digests[key] = digest
            self._digests.move_to_end(key)
            while len(self._digests) > self.max_entries:
                self._digests.popitem(last=False)

    def sha256(self, path: str | os.PathLike) -> str:
        """The digest of ``path``, hashed now if unknown (outside the lock: look-ups never wait for a read)."""
        key = self._key(path)
        with self._lock:
            if key in self._digests:
                return self._digests[key]
            self._busy.add(key)
        try:
            digest = file_sha256(key[0])
        finally:
            with self._lock:
                self._busy.discard(key)
        self._put(key, digest)
        return digest


@dataclass(frozen=True)
class Provenance:
    """Which weights a generator uses, found WITHOUT downloading or loading (for the Status panel)."""

    model: str
    origin: str  # "hub" (a Hub file, cached or not) | "local" (a file or folder of yours) | "none"
    spec: str
    default_spec: str  # the registry's published weights ("" when none were published)
    repo: str = ""
    filename: str = ""
    revision: str = ""  # commit of the cached download ("" until downloaded)
    path: str = ""  # the file the hash is of (a folder's model.safetensors; the Hub cache's snapshot file)
    sha256: str = ""  # "" = not known yet (see `pending`)
    git_sha1: str = ""  # git blob id: what the Hub names a small non-LFS file by
    pending: str = ""  # why sha256 is not known yet

    @property
    def published(self) -> bool:
        return self.origin == "hub" and bool(self.default_spec) and self.spec == self.default_spec

    def describe(self) -> str:
        """One line, e.g. ``published weights: owner/name : file.pth @ 1a2b3c4 · sha256 9f…``."""
        if self.origin == "none":
            return f"weights {self.spec!r}: {self.pending}" if self.spec else "no weights configured"
        hashes = [f"git blob sha1 {self.git_sha1} (a small file kept in git, not LFS)"] if self.git_sha1 else []
        hashes.append(f"sha256 {self.sha256}" if self.sha256 else self.pending)
        if self.origin == "local":
            return f"your local weights: {self.path} · " + " · ".join(hashes)
        if self.published:
            label = "published weights"
        elif self.default_spec:
            d_repo, _, d_file = self.default_spec.partition(":")
            label = f"Hub weights, NOT the published default ({d_repo} : {d_file})"
        else:
            label = "your Hub weights (none were published for this model)"
        at = f" @ {self.revision[:7]}" if self.revision else ""
        return f"{label}: {self.repo} : {self.filename}{at} · " + " · ".join(hashes)

    def to_dict(self) -> dict:
        return asdict(self) | {"published": self.published}


def _sha256_or_pending(file: Path, model_id: str, hashes: FileHashes | None, cache_dir: Path | None,
                       hash_now_bytes: int) -> tuple[str, str]:
    """(sha256, "") when known or cheap to know now; ("", why not) for a large file not hashed yet."""
    digest = hashes.get(file) if hashes is not None else ""
    if not digest and cache_dir is not None and file.suffix != ".safetensors":
        meta = _copy_meta(_cache_file(cache_dir, model_id, file), file)  # the copy's header: no tensors read
        digest = (meta or {}).get("source_sha256", "")
        if digest and hashes is not None:
            hashes.put(file, digest)
    if digest:
        return digest, ""
    if file.stat().st_size <= hash_now_bytes:
        return (hashes.sha256(file) if hashes is not None else file_sha256(file)), ""
    if hashes is not None and hashes.busy(file):
        return "", "sha256 being computed"
    return "", "sha256 computed when first loaded"


def weights_provenance(model: str | int, spec: str | os.PathLike | None = None, *, hashes: FileHashes | None = None,
                       cache_dir: str | os.PathLike | None = None,
                       hash_now_bytes: int = HASH_NOW_BYTES) -> Provenance:
    """Where ``model``'s weights come from, WITHOUT downloading: Hub repo, file, commit and sha256 (the cached
    blob's name) or a local path and its sha256. ``spec`` None or "" = the registry's default. A file is hashed
    here only when small (``hash_now_bytes``) or never before (``hashes`` remembers digests; ``cache_dir``, the
    weights copies' folder, holds the digests recorded at earlier conversions)."""
    from wav2lip384.models import registry

    entry = registry.get(model)
    spec_str = os.fspath(spec) if spec else entry.default_weights
    base = {"model": entry.id, "spec": spec_str, "default_spec": entry.default_weights}
    if not spec_str:
        return Provenance(origin="none", **base)
    kind, repo, filename = _locate(spec_str)
    copies = Path(cache_dir).expanduser() if cache_dir is not None else None
    if kind == "local":
        digest, pending = _sha256_or_pending(Path(repo), entry.id, hashes, copies, hash_now_bytes)
        return Provenance(origin="local", path=repo, sha256=digest, pending=pending, **base)
    if kind == "absent":
        return Provenance(origin="local", path=repo, pending="nothing there", **base)
    if kind == "bad":
        return Provenance(origin="none", pending="neither a file nor a Hub repo", **base)
    cached = hub_cached_file(repo, filename)
    if cached is None:
        return Provenance(origin="hub", repo=repo, filename=filename,
                          pending="not downloaded yet (commit and sha256 known after the download)", **base)
    digest, pending = cached.sha256, ""
    if not digest:  # a non-LFS file or a copied (not linked) snapshot: hash the file itself
        digest, pending = _sha256_or_pending(cached.path, entry.id, hashes, copies, hash_now_bytes)
    return Provenance(origin="hub", repo=repo, filename=filename, revision=cached.revision, path=str(cached.path),
                      sha256=digest, git_sha1=cached.git_sha1, pending=pending, **base)
