"""Loading a model for use: generators by registry id (:func:`load_generator`, :func:`generator_status`, which
never downloads) and the SyncNet / discriminator experts by size (:func:`load_model`, :func:`load_syncnet`).
Reading files is :mod:`.io`, downloads and the safetensors copies :mod:`.cache`, hashes :mod:`.provenance`."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import UserFacingError
from common.hub import HubFile, hub_reachable, resolve_file
from wav2lip384.models import registry
from wav2lip384.weights.cache import ProgressFn, _cache_file, _download, _read_cached, _write_cached
from wav2lip384.weights.io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    _how_to_fix,
    _is_local_like,
    _locate,
    _what,
    from_pretrained,
    load_state_dict_file,
    load_state_dict_strict,
    state_dict_problems,
)
from wav2lip384.weights.provenance import file_sha256, hub_blob_sha256, hub_cached_file

log = logging.getLogger(__name__)


@dataclass
class LoadInfo:
    """How one generator's weights were found and read (kept as ``model.load_info``; logged at INFO)."""

    model: str  # registry id
    spec: str  # what was asked for: a local path or a Hub reference
    source: str  # local file or folder the weights came from (the downloaded file for a Hub spec)
    source_format: str  # "pth" (torch pickle) | "safetensors" | "ours" (model.safetensors + config.json)
    source_bytes: int
    cache_path: str = ""  # weights-only safetensors copy of a .pth ("" when there is none)
    cache_bytes: int = 0
    from_cache: bool = False  # this load read the copy instead of the .pth
    wrote_cache: bool = False  # this load wrote the copy
    download_s: float = 0.0  # Hub download (0 when local or already in the HF cache)
    read_s: float = 0.0  # reading the tensors (torch.load or safetensors)
    build_s: float = 0.0  # building the network and the strict key-for-key load
    convert_s: float = 0.0  # writing the safetensors copy
    hash_s: float = 0.0  # hashing the source (only when a copy is written and the hash was not known)
    total_s: float = 0.0
    source_sha256: str = ""  # of the source file, when known without an extra read ("" otherwise)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WeightsStatus:
    """Whether a generator's weights can be had, found WITHOUT downloading (for a status panel / pickers)."""

    model: str
    available: bool
    where: str  # "local" | "hf-cache" | "hub" (reachable, downloads on first use) | "missing"
    spec: str
    env_var: str
    message: str  # one line: where the weights are, or what to do

    def to_dict(self) -> dict:
        return asdict(self)


def _registry(model):
    return registry.get(model)


def generator_config(model):
    """The ``GeneratorConfig`` of a registry id or alias (the architecture its public weights load into)."""
    return _registry(model).config()


def how_to_get(model) -> str:
    """What to do when a generator's weights cannot be had (names the environment variable). Built from the
    registry entry only (no model is a special case here): no published weights -> how to train or provide them."""
    spec = _registry(model)
    if not spec.default_weights:
        train = (f"Train them with `python -m wav2lip384.train generator --size {spec.img_size} ...`, then set "
                 f"{spec.env_var} to the export/ folder it writes (model.safetensors + config.json) or to a "
                 "checkpoint file" if spec.trainable else f"Set {spec.env_var} to a local weights file or folder")
        why = f" ({spec.no_weights})" if spec.no_weights else ""
        return (f"There are no public weights for the {spec.id} generator{why}. {train}, or to a Hugging Face Hub "
                f"repo ('owner/name' or 'owner/name:path/to/file'). Until then use "
                f"{registry.get(registry.DEFAULT_MODEL).title}.")
    if spec.default_weights and ":" in spec.default_weights:
        hub = HubFile.parse(spec.default_weights)
        return (f"Set {spec.env_var} to a local copy of {Path(hub.filename).name} (Hub repo {hub.repo_id}, file "
                f"{hub.filename}) or to another Hub file 'owner/name:path/in/repo'.")
    return f"Set {spec.env_var} to a local weights file or folder, or to a Hub file 'owner/name:path/in/repo'."


def _what_model(spec) -> str:
    return f"{spec.title} weights ({spec.id})"


def _fit(model, sd: dict, *, spec, source_name: str) -> None:
    problems = state_dict_problems(model, sd)
    if problems:
        raise UserFacingError(
            f"{source_name} does not fit the {spec.title} generator ({spec.id}, {spec.img_size}x{spec.img_size}): "
            + " | ".join(problems) + ". Is it a checkpoint of another model (e.g. 96 vs 384, or another family)? "
            f"Pick the model it belongs to, or set {spec.env_var} to weights of {spec.id}.")
    model.load_state_dict(sd, strict=True)


def _build_and_fit(config, sd: dict, *, spec, source_name: str):
    """Build the generator on the meta device (no random initialisation: 172.7 M parameters take seconds to
    initialise) and adopt the loaded tensors (``assign=True``, no copy) after the key-for-key check."""
    import torch

    from wav2lip384.models import build_model

    with torch.device("meta"):
        gen = build_model("generator", config)  # shapes only
    problems = state_dict_problems(gen, sd)
    if not problems:
        gen.load_state_dict(sd, strict=True, assign=True)
        if not any(t.is_meta for t in list(gen.parameters()) + list(gen.buffers())):
            return gen
    gen = build_model("generator", config)  # a buffer outside the state dict (or a misfit): the plain way
    _fit(gen, sd, spec=spec, source_name=source_name)
    return gen


def load_generator(model: str | int = registry.DEFAULT_MODEL, spec: str | os.PathLike | None = None, *, device="cpu",
                   dtype=None, cache_dir: str | os.PathLike | None = None, progress: ProgressFn | None = None):
    """The generator of registry id ``model`` (``96``/``384`` are aliases), eval mode, on ``device``/``dtype``.

    ``spec``: a local ``.pth``/``.safetensors`` file, one of our folders, or a Hub reference; None or "" =
    the registry's default weights (none for ``paper384``: a clear error says how to get them).
    ``cache_dir``: where the weights-only safetensors copy of a ``.pth`` is written on its first load and read
    on later ones (None: no copy). ``progress(done_bytes, total_bytes)`` follows a Hub download.
    The returned module carries ``load_info`` (:class:`LoadInfo`). Any failure is one :class:`UserFacingError`.
    """
    import torch

    t_start = time.perf_counter()
    entry = _registry(model)
    what, how = _what_model(entry), how_to_get(entry.id)
    dtype = dtype or torch.float32
    spec_str = os.fspath(spec) if spec else entry.default_weights
    if not spec_str:  # nothing asked for and no default (none published): how_to_get says what to do
        raise UserFacingError(how)
    try:
        return _load_generator(entry, spec_str, what, how, device=device, dtype=dtype,
                               cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
                               progress=progress, t_start=t_start)
    except UserFacingError as err:  # every failure says which variable to set
        if entry.env_var not in str(err):
            raise UserFacingError(f"{err} {how}") from err
        raise


def _load_generator(entry, spec_str: str, what: str, how: str, *, device, dtype, cache_dir, progress, t_start):
    from wav2lip384.models import model_kind

    local = Path(spec_str).expanduser()
    download_s = 0.0
    # our format: a folder, a Hub repo 'owner/name', a Hub/local model.safetensors beside a config.json
    ours_local = local.is_dir() or (local.is_file() and local.suffix == ".safetensors"
                                    and (local.parent / CONFIG_NAME).is_file())
    ours_hub = not _is_local_like(spec_str) and (":" not in spec_str or spec_str.endswith(".safetensors"))
    if ours_local or ours_hub:
        t = time.perf_counter()
        gen = from_pretrained(spec_str, device=device, dtype=dtype, what=what, how_to_fix=how)
        if model_kind(gen) != "generator" or gen.config.img_size != entry.img_size:
            raise UserFacingError(f"{spec_str} holds a {model_kind(gen)} of size {gen.config.img_size}, not the "
                                  f"{entry.img_size}x{entry.img_size} generator of {entry.id}. {how}")
        folder = local if local.is_dir() else local.parent
        weights_file = folder / WEIGHTS_NAME if local.is_dir() else local
        info = LoadInfo(entry.id, spec_str, str(folder if local.exists() else spec_str), "ours",
                        weights_file.stat().st_size if weights_file.is_file() else 0,
                        read_s=time.perf_counter() - t)
        return _done(gen, info, t_start)
    # one file: local, or downloaded from the Hub
    if local.is_file():
        path = local
    elif _is_local_like(spec_str):
        raise UserFacingError(f"{what}: no file at {local}. {how}")
    else:
        path, download_s = _download(HubFile.parse(spec_str), what=what, how=how, progress=progress)
    config = generator_config(entry.id)
    is_pickle = path.suffix != ".safetensors"
    copy = _cache_file(cache_dir, entry.id, path) if (cache_dir is not None and is_pickle) else None
    t = time.perf_counter()
    cached = _read_cached(copy, path) if copy is not None else None
    sd, copy_meta = cached if cached is not None else (None, {})
    from_cache = sd is not None
    if sd is None:
        sd = load_state_dict_file(path)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    gen = _build_and_fit(config, sd, spec=entry, source_name=f"{what} {path.name}")
    build_s = time.perf_counter() - t
    # the source's sha256 for the Status panel: free for a Hub LFS file (its blob's name) or a copy written by
    # a recent version (its metadata); otherwise hashed here, once, when a copy is written (first load)
    sha, hash_s = hub_blob_sha256(path) or copy_meta.get("source_sha256", ""), 0.0
    convert_s, wrote = 0.0, False
    if copy is not None and not from_cache:
        t = time.perf_counter()
        if not sha:
            sha = file_sha256(path)
            hash_s = time.perf_counter() - t
        t = time.perf_counter()
        try:
            _write_cached(copy, sd, path, sha)
            wrote = True
        except OSError as err:  # a full or read-only cache disk costs speed next time, not this load
            log.warning("could not write the weights cache %s: %s", copy, err)
        convert_s = time.perf_counter() - t
    del sd
    gen = gen.to(device=device, dtype=dtype).eval()
    info = LoadInfo(entry.id, spec_str, str(path), "pth" if is_pickle else "safetensors", path.stat().st_size,
                    cache_path=str(copy) if copy is not None and copy.is_file() else "",
                    cache_bytes=copy.stat().st_size if copy is not None and copy.is_file() else 0,
                    from_cache=from_cache, wrote_cache=wrote, download_s=download_s, read_s=read_s,
                    build_s=build_s, convert_s=convert_s, hash_s=hash_s, source_sha256=sha)
    return _done(gen, info, t_start)


def _done(gen, info: LoadInfo, t_start: float):
    info.total_s = time.perf_counter() - t_start
    for k in ("download_s", "read_s", "build_s", "convert_s", "hash_s", "total_s"):
        setattr(info, k, round(getattr(info, k), 3))
    gen.load_info = info
    log.info("loaded %s from %s (%s, %.1f MB%s) in %.2f s (read %.2f s, convert %.2f s)", info.model, info.source,
             "safetensors copy" if info.from_cache else info.source_format, info.source_bytes / 2**20,
             f"; copy {info.cache_path}: {info.cache_bytes / 2**20:.1f} MB" if info.cache_path else "",
             info.total_s, info.read_s, info.convert_s)
    return gen


def generator_status(model: str | int, spec: str | os.PathLike | None = None) -> WeightsStatus:
    """Whether the weights of ``model`` can be had, WITHOUT downloading: a local file/folder, the Hugging Face
    cache, or a reachable Hub (downloaded on first use). ``spec`` None or "" = the registry's default."""
    entry = _registry(model)
    spec_str = os.fspath(spec) if spec else entry.default_weights
    what, how = _what_model(entry), how_to_get(entry.id)

    def status(ok: bool, where: str, message: str) -> WeightsStatus:
        return WeightsStatus(entry.id, ok, where, spec_str, entry.env_var, message)

    if not spec_str:
        return status(False, "missing", how)
    kind, repo, filename = _locate(spec_str)
    if kind == "local":
        return status(True, "local", f"{what}: local {Path(spec_str).expanduser()}")
    if kind == "absent":
        return status(False, "missing", f"{what}: nothing usable at {repo}. {how}")
    if kind == "bad":
        return status(False, "missing", f"{what}: {spec_str!r} is neither an existing file nor a Hub repo "
                                        f"'owner/name'. {how}")
    if hub_cached_file(repo, filename) is not None:
        return status(True, "hf-cache", f"{what}: {spec_str} (in the local Hugging Face cache)")
    if hub_reachable():
        return status(True, "hub", f"{what}: {spec_str} (downloaded from the Hugging Face Hub on first use)")
    return status(False, "missing", f"{what}: the Hugging Face Hub is not reachable from here and file {filename} "
                                    f"of the Hub repo {repo} is not in the local cache. {how}")


# ---------------------------------------------------------------------------------------------------------
# SyncNet / discriminator by size (the training and evaluation experts; generators load by registry id)
# ---------------------------------------------------------------------------------------------------------
def _looks_like_ours(spec: str) -> bool:
    p = Path(spec).expanduser()
    if p.is_dir() or p.suffix == ".safetensors":
        return True
    if p.suffix in (".pth", ".pt", ".tar", ".ckpt"):
        return False
    if p.exists():
        return False
    repo, sep, filename = spec.partition(":")
    return not sep or filename.endswith(".safetensors")


def load_model(kind: str, spec: str | os.PathLike | None = None, size: int = 96, *, device="cpu", dtype=None):
    """Load a ``kind`` model ('generator' | 'syncnet' | 'discriminator') of ``size`` (96 | 384) from ``spec``.

    Generators go through :func:`load_generator` (``96`` = wav2lip96, ``384`` = paper384). Original ``.pth``
    files are loaded into the built-in architecture of ``size``; our format rebuilds its saved architecture and
    must be of ``kind`` and ``size``.
    """
    import torch

    from wav2lip384.models import build_model, model_kind

    if size not in (96, 384):
        raise UserFacingError(f"Model size must be 96 or 384, not {size}.")
    if kind == "generator":
        return load_generator(str(size), spec, device=device, dtype=dtype)
    dtype = dtype or torch.float32
    what, how = _what(kind, size), _how_to_fix(kind)
    spec = os.fspath(spec) if spec else ""
    if not spec:  # no SyncNet or discriminator default: the caller names the file
        raise UserFacingError(how)
    local = Path(spec).expanduser()
    if local.is_file() and local.suffix == ".safetensors" and not (local.parent / CONFIG_NAME).is_file():
        model = build_model(kind, size)  # bare safetensors weights: the built-in architecture of `size`
        load_state_dict_strict(model, load_state_dict_file(local), source=f"{what} {local.name}")
        return model.to(device=device, dtype=dtype).eval()
    if _looks_like_ours(spec):
        model = from_pretrained(spec, device=device, dtype=dtype, what=what, how_to_fix=how)
        if model_kind(model) != kind or model.config.img_size != size:
            raise UserFacingError(f"{spec} holds a {model_kind(model)} of size {model.config.img_size}, "
                                  f"not the {kind} of size {size} that was asked for.")
        return model
    path = resolve_file(spec, what=what, how_to_fix=how)
    model = build_model(kind, size)
    load_state_dict_strict(model, load_state_dict_file(path), source=f"{what} {path.name}")
    return model.to(device=device, dtype=dtype).eval()


def load_syncnet(spec: str | os.PathLike | None = None, size: int = 96, device="cpu", dtype=None):
    """The SyncNet expert of ``size`` (96 | 384), eval mode, on ``device``/``dtype``."""
    return load_model("syncnet", spec, size, device=device, dtype=dtype)
