"""Find, load and save lip-sync weights; convert training checkpoints for inference.

Generators are loaded by registry id (:mod:`wav2lip384.registry`)::

    gen = load_generator("wav2lip256", device="cpu", cache_dir=Path("~/.cache/digital-human/weights"))
    gen.load_info  # LoadInfo: where the tensors came from, both file sizes, download / read / convert times
    generator_status("livetalking384", spec)  # WeightsStatus, never downloads
    weights_provenance("livetalking384", spec).describe()  # Hub repo, file, commit, sha256 (or a local path)

Formats read:
- **public** Wav2Lip-family ``.pth`` files (``wav2lip_gan.pth``, ``wav2lipv2.pth``, ``wav2lip384.pth``,
  ``lipsync_expert.pth``): a pickled dict of tensors at the top level, or under ``"state_dict"`` next to
  ``"optimizer"`` / ``"global_step"`` / ``"global_epoch"`` (ignored), possibly saved from ``nn.DataParallel``
  (``module.`` prefixes, stripped). Read with ``torch.load(weights_only=True)``, which refuses pickled code.
  The first load of such a file writes a weights-only safetensors copy into ``cache_dir`` (named by the source's
  real path, size and modification time, so a changed file is converted again); later loads read the copy.
- **ours**: a directory with ``model.safetensors`` + ``config.json`` (the architecture as data, so a
  checkpoint always rebuilds the network it was trained as). Written by :func:`save_pretrained`.
- **training checkpoints** of ``python -m wav2lip384.train`` (:func:`model_from_checkpoint`, :func:`load_expert`).

A *spec* is a local file or directory, or a Hub reference: ``owner/name:path/in/repo.pth`` for one file,
``owner/name`` for a repo in our format. Hub access goes through :mod:`common.hub` (offline fails at once) and
every failure to get a generator's weights is one :class:`UserFacingError` naming the repo, the file and the
environment variable to set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.errors import UserFacingError
from common.hub import HubFile, hub_reachable, resolve_file, resolve_snapshot

log = logging.getLogger(__name__)

FORMAT_NAME = "wav2lip384"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


TRAINING_CHECKPOINT_FORMAT = "wav2lip384-train-checkpoint/1"  # the "format" entry of wav2lip384.train checkpoints
CACHE_FORMAT = "wav2lip384-weights-cache/1"  # metadata of the weights-only safetensors copies
PICKLE_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".model", ".bin")

NO_384_WEIGHTS = (
    "There are no public weights for the Wav2Lip-384 generator (the paper did not release any). "
    "Train them with `python -m wav2lip384.train generator --size 384 ...`, then set "
    "DH_WAV2LIP384_CHECKPOINT to the export/ folder it writes (model.safetensors + config.json) or to a "
    "checkpoint file, or to a Hugging Face Hub repo ('owner/name' or 'owner/name:path/to/file'). "
    "Until then use the 96 model."
)
NO_SYNCNET = (
    "No SyncNet (lip-sync expert) checkpoint was given. For 96 pass the original lipsync_expert.pth "
    "(file or 'owner/name:path'); for 384 train one with `python -m wav2lip384.train syncnet --size 384 ...` "
    "and pass its checkpoint (e.g. to the generator trainer's --syncnet). Note: DH_SYNCNET_CHECKPOINT is "
    "syncnet_python's model for LSE-D/LSE-C evaluation, a different network."
)


NO_DISCRIMINATOR = (
    "No quality-discriminator checkpoint was given: pass a file (the original visual_quality_disc.pth for 96) "
    "or one saved by `python -m wav2lip384.train`."
)


def _how_to_fix(kind: str) -> str:
    """What to do when a SyncNet or discriminator is missing (generators: :func:`how_to_get`, by registry id)."""
    return NO_SYNCNET if kind == "syncnet" else NO_DISCRIMINATOR


def _what(kind: str, size: int) -> str:
    return {"syncnet": f"SyncNet-{size} weights", "discriminator": f"quality discriminator-{size} weights"}[kind]


# ---------------------------------------------------------------------------------------------------------
# State dicts
# ---------------------------------------------------------------------------------------------------------
def _torch_load(p: Path) -> Any:
    """``torch.load(weights_only=True)`` on CPU; memory-mapped when the file is in torch's zip format (a 2 GB
    checkpoint with optimizer state then costs only the pages of the tensors that are used)."""
    import torch

    try:
        return torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err) and "zip" not in str(err):
            raise
    return torch.load(str(p), map_location="cpu", weights_only=True)  # legacy (pre-1.6) format: no mmap


def state_dict_from_object(obj: Any, name: str = "checkpoint") -> dict:
    """The tensors of a loaded checkpoint object: ``obj["state_dict"]`` when present, else ``obj`` itself;
    non-tensor entries (step counters, optimizer state kept beside the tensors) dropped, ``module.`` stripped."""
    import torch

    if isinstance(obj, dict) and isinstance(obj.get("models"), dict) and "task" in obj:
        raise UserFacingError(
            f"{name} is a `python -m wav2lip384.train` training checkpoint, not inference weights: use the "
            "export/ folder the trainer writes next to it (model.safetensors + config.json).")
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict) or not sd:
        raise UserFacingError(f"{name} holds no state dict (expected {{'state_dict': ...}} or a dict of tensors).")
    out = {}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. a stray step counter next to the tensors
        key = str(key)
        out[key[len("module."):] if key.startswith("module.") else key] = value  # saved from nn.DataParallel
    if not out:
        raise UserFacingError(f"{name} contains no tensors.")
    return out


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """A checkpoint file -> {name: tensor} (``.safetensors`` or a torch pickle, ``module.`` stripped)."""
    p = Path(os.fspath(path))
    if not p.is_file():
        raise UserFacingError(f"Checkpoint {p} does not exist.")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(p), device="cpu")
        except Exception as err:
            raise UserFacingError(f"{p.name} is not a readable safetensors file ({err}).") from err
        return state_dict_from_object(sd, p.name)
    try:
        obj = _torch_load(p)
    except Exception as err:
        raise UserFacingError(
            f"{p.name} is not a loadable PyTorch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Only plain tensor checkpoints are accepted "
            "(torch.load weights_only=True)."
        ) from err
    return state_dict_from_object(obj, p.name)


def state_dict_problems(model, state_dict: dict) -> list[str]:
    """Human-readable differences between a model's state dict and ``state_dict`` (empty = fits)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = "; ".join(items[:5]) + (f"; ... ({len(items) - 5} more)" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    return problems


def load_state_dict_strict(model, state_dict: dict, *, source: str = "checkpoint") -> None:
    """Load every tensor or raise :class:`UserFacingError` listing missing/unexpected/mismatched keys."""
    problems = state_dict_problems(model, state_dict)
    if problems:
        size = getattr(getattr(model, "config", None), "img_size", "?")
        raise UserFacingError(
            f"{source} does not fit the {type(model).__name__} (size {size}): " + " | ".join(problems)
            + ". Is it a checkpoint of another model or of the other size (96 vs 384)?"
        )
    model.load_state_dict(state_dict, strict=True)


# ---------------------------------------------------------------------------------------------------------
# Our format: model.safetensors + config.json
# ---------------------------------------------------------------------------------------------------------
def save_pretrained(model, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created). Returns the directory."""
    from safetensors.torch import save_file

    from wav2lip384.models import model_kind

    d = Path(os.fspath(directory))
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(d / WEIGHTS_NAME), metadata={"format": "pt"})
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": model_kind(model),
            "img_size": model.config.img_size, "config": model.config.to_dict()}
    (d / CONFIG_NAME).write_text(json.dumps(meta, indent=1))
    return d


def _read_config(path: Path):
    from wav2lip384.config import CONFIG_CLASSES

    try:
        meta = json.loads(path.read_text())
        kind = meta["kind"]
        config = CONFIG_CLASSES[kind].from_dict(meta["config"])
    except Exception as err:
        raise UserFacingError(f"{path} is not a valid {FORMAT_NAME} config.json ({type(err).__name__}: {err}).") from err
    return kind, config


def _build_from_files(weights: Path, config_json: Path, device, dtype):
    from wav2lip384.models import build_model

    kind, config = _read_config(config_json)
    model = build_model(kind, config)
    load_state_dict_strict(model, load_state_dict_file(weights), source=str(weights.name))
    return model.to(device=device, dtype=dtype).eval()


def from_pretrained(spec: str | os.PathLike, *, device="cpu", dtype=None, what: str = "model weights",
                    how_to_fix: str = ""):
    """Rebuild a model saved by :func:`save_pretrained` from a directory, its ``model.safetensors``,
    a Hub repo ``owner/name`` or a Hub file ``owner/name:dir/model.safetensors``."""
    import torch

    dtype = dtype or torch.float32
    path = Path(os.fspath(spec)).expanduser()
    if path.is_dir():
        weights, cfg = path / WEIGHTS_NAME, path / CONFIG_NAME
    elif path.is_file():
        weights, cfg = path, path.parent / CONFIG_NAME
    elif ":" in str(spec):
        hub = HubFile.parse(str(spec))
        weights = resolve_file(str(hub), what=what, how_to_fix=how_to_fix)
        cfg_name = str(Path(hub.filename).parent / CONFIG_NAME).removeprefix("./")
        cfg = resolve_file(f"{hub.repo_id}:{cfg_name}", what=what, how_to_fix=how_to_fix)
    else:
        snap = resolve_snapshot(str(spec), what=what, how_to_fix=how_to_fix,
                                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME])
        weights, cfg = snap / WEIGHTS_NAME, snap / CONFIG_NAME
    for f in (weights, cfg):
        if not f.is_file():
            raise UserFacingError(f"{what}: {f.name} is missing next to {spec}. {how_to_fix}".strip())
    return _build_from_files(weights, cfg, device, dtype)


# ---------------------------------------------------------------------------------------------------------
# Generators by registry id
# ---------------------------------------------------------------------------------------------------------
ProgressFn = Callable[[int, int | None], None]
"""``progress(done_bytes, total_bytes or None)``, called while a weights file downloads."""


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
    from wav2lip384 import registry

    return registry.get(model)


def generator_config(model):
    """The ``GeneratorConfig`` of a registry id or alias (the architecture its public weights load into)."""
    return _registry(model).config()


def how_to_get(model) -> str:
    """What to do when a generator's weights cannot be had (names the environment variable)."""
    spec = _registry(model)
    if spec.id == "paper384":
        return NO_384_WEIGHTS
    if spec.default_weights and ":" in spec.default_weights:
        hub = HubFile.parse(spec.default_weights)
        return (f"Set {spec.env_var} to a local copy of {Path(hub.filename).name} (Hub repo {hub.repo_id}, file "
                f"{hub.filename}) or to another Hub file 'owner/name:path/in/repo'.")
    return f"Set {spec.env_var} to a local weights file or folder, or to a Hub file 'owner/name:path/in/repo'."


def _what_model(spec) -> str:
    return f"{spec.title} weights ({spec.id})"


def _is_local_like(spec_str: str) -> bool:
    p = Path(spec_str).expanduser()
    return (p.exists() or p.is_absolute() or spec_str.startswith((".", "~"))
            or (":" not in spec_str and p.suffix.lower() in PICKLE_SUFFIXES + (".safetensors",)))


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


def load_generator(model: str | int = "wav2lip96", spec: str | os.PathLike | None = None, *, device="cpu",
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
    if not spec_str:
        raise UserFacingError(how if entry.id == "paper384" else f"{what}: no weights configured. {how}")
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


def _locate(spec_str: str) -> tuple[str, str, str]:
    """What a non-empty weights spec names, without the network: ``("local", weights file, "")`` (a folder's
    ``model.safetensors``), ``("absent", path, "")`` for a local-looking path with nothing usable,
    ``("hub", repo, filename)`` (``owner/name`` alone = our format's ``model.safetensors``) or ``("bad", "", "")``."""
    path = Path(spec_str).expanduser()
    if path.is_file():
        return "local", str(path), ""
    if path.is_dir() and (path / WEIGHTS_NAME).is_file():
        return "local", str(path / WEIGHTS_NAME), ""
    if _is_local_like(spec_str):
        return "absent", str(path), ""
    repo, sep, filename = spec_str.partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")):
        return "bad", "", ""
    return "hub", repo, filename if sep else WEIGHTS_NAME


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
# Provenance: which weights exactly (Hub repo, file, commit, sha256, or a local path and its sha256), found
# without downloading and without reading a multi-GB file on every look
# ---------------------------------------------------------------------------------------------------------
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
    entry = _registry(model)
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


# ---------------------------------------------------------------------------------------------------------
# Training checkpoints (``python -m wav2lip384.train``) -> inference models. Inference code imports these from
# here, never from the trainers.
# ---------------------------------------------------------------------------------------------------------
def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A ``wav2lip384.train`` checkpoint as a dict (``weights_only``: tensors and plain Python values only)."""
    import torch

    p = Path(os.fspath(path))
    if not p.is_file():
        raise UserFacingError(f"training checkpoint {p} does not exist")
    try:
        ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, not a torch file...
        raise UserFacingError(f"{p} is not a readable training checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != TRAINING_CHECKPOINT_FORMAT:
        raise UserFacingError(f"{p} is not a checkpoint written by wav2lip384.train")
    return ckpt


def _last(history: list[dict], split: str) -> dict | None:
    rows = [r for r in history if r.get("split") == split]
    return rows[-1] if rows else None


def model_from_checkpoint(path: str | os.PathLike):
    """(model in eval mode on CPU, info) for a ``wav2lip384.train`` checkpoint (generator or SyncNet)."""
    from wav2lip384.config import GeneratorConfig, SyncNetConfig
    from wav2lip384.models import build_model

    ckpt = read_training_checkpoint(path)
    task, tcfg = ckpt["task"], ckpt["task_config"]
    if task == "syncnet":
        kind = "syncnet"
        config = SyncNetConfig.from_dict(tcfg["model"]) if tcfg.get("model") else SyncNetConfig.for_size(tcfg["size"])
    elif task == "generator":
        kind = "generator"
        config = (GeneratorConfig.from_dict(tcfg["model"]) if tcfg.get("model")
                  else GeneratorConfig.for_size(tcfg["size"]))
    else:
        raise UserFacingError(f"{path}: unknown task {task!r}")
    model = build_model(kind, config)
    model.load_state_dict(ckpt["models"][kind])
    model.eval()
    history = ckpt.get("history", [])
    info = {"task": task, "step": int(ckpt["step"]), "task_config": tcfg, "train_config": ckpt["train_config"],
            "world_size": ckpt.get("world_size", 1), "task_state": ckpt.get("task_state", {}),
            "last_train": _last(history, "train"), "last_val": _last(history, "val")}
    return model, info


def load_expert(spec: str | os.PathLike, size: int, device="cpu"):
    """The expert SyncNet: a training checkpoint file (.pt), an exported folder (``save_pretrained``), or
    anything :func:`load_syncnet` accepts (original ``lipsync_expert.pth``, Hub repo / file)."""
    from wav2lip384.models import model_kind

    if not str(spec):
        raise UserFacingError("generator training needs --syncnet: a SyncNet trained with "
                              "`python -m wav2lip384.train syncnet` (its last.pt or export/ folder) or a Hub repo")
    path = Path(str(spec)).expanduser()
    if path.is_file() and path.suffix == ".pt":
        model, info = model_from_checkpoint(path)
        if info["task"] != "syncnet":
            raise UserFacingError(f"{spec} is a {info['task']} checkpoint; the generator needs a SyncNet")
        return model.to(device)
    if path.is_dir():
        model = from_pretrained(path, device=device, what="expert SyncNet")
        if model_kind(model) != "syncnet":
            raise UserFacingError(f"{spec} holds a {model_kind(model)}, not a SyncNet")
        return model
    if path.suffix in (".pt", ".pth", ".safetensors") or path.is_absolute() or str(spec).startswith("."):
        raise UserFacingError(f"expert SyncNet: nothing at {path}. Pass the last.pt or export/ folder of "
                              "`python -m wav2lip384.train syncnet`, or a Hub repo.")
    return load_syncnet(str(spec), size=size, device=device)
