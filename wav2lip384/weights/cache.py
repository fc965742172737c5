"""Getting a weights file and keeping a fast copy of it: the Hub download (Hugging Face cache first, then the
network, with byte progress) and the weights-only safetensors copy of a ``.pth`` written on its first load
(named by the source's real path, size and modification time; its metadata records the source's sha256)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from common.errors import UserFacingError
from common.hub import HubFile, hub_reachable

log = logging.getLogger(__name__)

CACHE_FORMAT = "wav2lip384-weights-cache/1"  # metadata of the weights-only safetensors copies

ProgressFn = Callable[[int, int | None], None]
"""``progress(done_bytes, total_bytes or None)``, called while a weights file downloads."""



def _progress_tqdm(progress: ProgressFn):
    """A tqdm class that forwards huggingface_hub's byte counts to ``progress`` (huggingface_hub draws its
    download bar with the ``tqdm_class`` it is given; the app turns the calls into its own progress bar)."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)
            progress(int(self.n), int(self.total) if self.total else None)

        def update(self, n=1):
            out = super().update(n)
            progress(int(self.n), int(self.total) if self.total else None)
            return out

    return _Forward


def _download(hub: HubFile, *, what: str, how: str, progress: ProgressFn | None) -> tuple[Path, float]:
    """(local path, seconds spent downloading) for a Hub file: the HF cache first, then the network."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision, local_files_only=True)), 0.0
    except Exception:  # not cached: fall through to the network
        pass
    where = f"file {hub.filename} of the Hugging Face Hub repo {hub.repo_id}"
    if not hub_reachable():
        raise UserFacingError(f"{what}: the Hugging Face Hub is not reachable from here and the {where} is not in "
                              f"the local cache. {how}")
    kwargs = {}
    if progress is not None:
        kwargs["tqdm_class"] = _progress_tqdm(progress)
    t = time.perf_counter()
    try:
        path = Path(hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision, **kwargs))
    except TypeError as err:  # a huggingface_hub without tqdm_class: download without progress
        if "tqdm_class" not in str(err):
            raise
        path = Path(hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision))
    except Exception as err:  # gated, missing, disk full, network error mid-way: one message
        raise UserFacingError(f"{what}: could not download the {where} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}). {how}") from err
    return path, time.perf_counter() - t


def _cache_file(cache_dir: Path, model_id: str, source: Path) -> Path:
    """The copy's name: model id, the source's stem and a key of its real path, size and modification time."""
    real = Path(os.path.realpath(source))
    st = real.stat()
    key = hashlib.sha256(f"{real}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir / f"{model_id}--{source.stem}--{key}.safetensors"


def _source_meta(source: Path) -> dict[str, str]:
    real = Path(os.path.realpath(source))
    st = real.stat()
    return {"format": CACHE_FORMAT, "source": str(real), "source_bytes": str(st.st_size),
            "source_mtime_ns": str(st.st_mtime_ns)}


def _copy_meta(path: Path, source: Path) -> dict[str, str] | None:
    """The metadata of the safetensors copy ``path`` (its header only, no tensors read) when it exists and was
    written from this very source file (same real path, size and modification time), else None."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # damaged copy: convert again
        log.warning("ignoring unreadable weights cache %s (%s)", path, err)
        return None
    own = _source_meta(source)
    return meta if {k: meta.get(k) for k in own} == own else None


def _read_cached(path: Path, source: Path) -> tuple[dict, dict[str, str]] | None:
    """(tensors, metadata) of the copy when it was written from this very source file, else None."""
    meta = _copy_meta(path, source)
    if meta is None:
        return None
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu"), meta
    except Exception as err:  # damaged copy: convert again
        log.warning("ignoring unreadable weights cache %s (%s)", path, err)
        return None


def _write_cached(path: Path, sd: dict, source: Path, source_sha256: str = "") -> None:
    """Write the weights-only copy atomically (unique temporary name, then rename) and drop older copies
    of the same source name (a changed file must not leave its old copy behind). The source's sha256 goes into
    the copy's metadata: later starts show the provenance of a 2 GB file without reading it again."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    meta = _source_meta(source) | ({"source_sha256": source_sha256} if source_sha256 else {})
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except RuntimeError:  # tensors sharing memory (a checkpoint saved with tied views): copy them apart
            save_file({k: v.clone() for k, v in tensors.items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    prefix = path.name.rsplit("--", 1)[0]
    for old in path.parent.glob(f"{prefix}--*.safetensors"):
        if old != path:
            old.unlink(missing_ok=True)
