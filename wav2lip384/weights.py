"""Find, load and save lip-sync weights; convert training checkpoints for inference.

Generators are loaded by registry id (:mod:`wav2lip384.registry`)::

    gen = load_generator("wav2lip256", device="cpu", cache_dir=Path("~/.cache/digital-human/weights"))
    gen.load_info  # LoadInfo: where the tensors came from, both file sizes, download / read / convert times
    generator_status("livetalking384", spec)  # WeightsStatus, never downloads

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
import time
import uuid
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
DEFAULT_GENERATOR_96 = "camenduru/Wav2Lip:checkpoints/wav2lip_gan.pth"  # = registry.MODELS["wav2lip96"].default_weights

NO_384_WEIGHTS = (
    "There are no public weights for the Wav2Lip-384 generator (the paper did not release any). "
    "Train them with `python -m wav2lip384.train generator --size 384 ...`, then set "
    "DH_WAV2LIP384_CHECKPOINT to the export/ folder it writes (model.safetensors + config.json) or to a "
    "checkpoint file, or to a Hugging Face Hub repo ('owner/name' or 'owner/name:path/to/file'). "
    "Until then use the 96 model."
)
HOW_TO_FIX_96 = (
    "Download wav2lip_gan.pth (the public Wav2Lip GAN checkpoint) and set DH_WAV2LIP96_CHECKPOINT to its "
    "path, or to a Hub file 'owner/name:path/to/wav2lip_gan.pth'."
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


def _how_to_fix(kind: str, size: int) -> str:
    if kind == "syncnet":
        return NO_SYNCNET
    if kind == "discriminator":
        return NO_DISCRIMINATOR
    return HOW_TO_FIX_96 if size == 96 else NO_384_WEIGHTS


def _what(kind: str, size: int) -> str:
    return {"generator": f"Wav2Lip-{size} generator weights", "syncnet": f"SyncNet-{size} weights",
            "discriminator": f"quality discriminator-{size} weights"}[kind]


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
    total_s: float = 0.0

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


def _read_cached(path: Path, source: Path) -> dict | None:
    """The copy's tensors when it exists and was written from this very source file, else None."""
    if not path.is_file():
        return None
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if {k: meta.get(k) for k in ("format", "source", "source_bytes", "source_mtime_ns")} != _source_meta(source):
            return None
        return load_file(str(path), device="cpu")
    except Exception as err:  # damaged copy: convert again
        log.warning("ignoring unreadable weights cache %s (%s)", path, err)
        return None


def _write_cached(path: Path, sd: dict, source: Path) -> None:
    """Write the weights-only copy atomically (unique temporary name, then rename) and drop older copies
    of the same source name (a changed file must not leave its old copy behind)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            save_file(tensors, str(tmp), metadata=_source_meta(source))
        except RuntimeError:  # tensors sharing memory (a checkpoint saved with tied views): copy them apart
            save_file({k: v.clone() for k, v in tensors.items()}, str(tmp), metadata=_source_meta(source))
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
    sd = _read_cached(copy, path) if copy is not None else None
    from_cache = sd is not None
    if sd is None:
        sd = load_state_dict_file(path)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    gen = _build_and_fit(config, sd, spec=entry, source_name=f"{what} {path.name}")
    build_s = time.perf_counter() - t
    convert_s, wrote = 0.0, False
    if copy is not None and not from_cache:
        t = time.perf_counter()
        try:
            _write_cached(copy, sd, path)
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
                    build_s=build_s, convert_s=convert_s)
    return _done(gen, info, t_start)


def _done(gen, info: LoadInfo, t_start: float):
    info.total_s = time.perf_counter() - t_start
    for k in ("download_s", "read_s", "build_s", "convert_s", "total_s"):
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
    path = Path(spec_str).expanduser()
    if path.is_file() or (path.is_dir() and (path / WEIGHTS_NAME).is_file()):
        return status(True, "local", f"{what}: local {path}")
    if _is_local_like(spec_str):
        return status(False, "missing", f"{what}: nothing usable at {path}. {how}")
    repo, sep, filename = spec_str.partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")):
        return status(False, "missing", f"{what}: {spec_str!r} is neither an existing file nor a Hub repo "
                                        f"'owner/name'. {how}")
    filename = filename if sep else WEIGHTS_NAME
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, filename)
    except Exception:  # malformed repo id etc.
        cached = None
    if isinstance(cached, str) and Path(cached).is_file():
        return status(True, "hf-cache", f"{what}: {spec_str} (in the local Hugging Face cache)")
    if hub_reachable():
        return status(True, "hub", f"{what}: {spec_str} (downloaded from the Hugging Face Hub on first use)")
    return status(False, "missing", f"{what}: the Hugging Face Hub is not reachable from here and file {filename} "
                                    f"of the Hub repo {repo} is not in the local cache. {how}")


# ---------------------------------------------------------------------------------------------------------
# SyncNet / discriminator by size, and the legacy size-based status (kept for existing callers)
# ---------------------------------------------------------------------------------------------------------
def _default_spec(kind: str, size: int) -> str:
    if kind == "generator" and size == 96:
        return DEFAULT_GENERATOR_96
    return ""


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
    what, how = _what(kind, size), _how_to_fix(kind, size)
    spec = os.fspath(spec) if spec else _default_spec(kind, size)
    if not spec:
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


def weights_status(spec: str | os.PathLike | None, size: int, kind: str = "generator") -> tuple[bool, str]:
    """(available, message) by size, WITHOUT downloading. Legacy: for generators prefer
    :func:`generator_status` (by registry id)."""
    what = _what(kind, size)
    spec = os.fspath(spec) if spec else _default_spec(kind, size)
    if not spec:
        return False, _how_to_fix(kind, size) if (kind != "generator" or size == 384) else f"{what}: not configured."
    path = Path(spec).expanduser()
    if path.is_file() or (path.is_dir() and (path / WEIGHTS_NAME).is_file()):
        return True, f"{what}: local {path}"
    repo, sep, filename = spec.partition(":")
    local_looking = path.suffix in (".pth", ".pt", ".tar", ".ckpt", ".safetensors") and not sep
    if path.is_absolute() or spec.startswith((".", "~")) or path.is_dir() or local_looking:
        return False, f"{what}: nothing usable at {path}. {_how_to_fix(kind, size)}"
    if repo.count("/") != 1:
        return False, f"{what}: {spec!r} is neither an existing file nor a Hub repo 'owner/name'."
    filename = filename if sep else CONFIG_NAME
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, filename)
    except Exception:  # malformed repo id etc.
        cached = None
    if isinstance(cached, str) and Path(cached).is_file():
        return True, f"{what}: {spec} (in the local Hugging Face cache)"
    if hub_reachable():
        return True, f"{what}: {spec} (will be downloaded from the Hugging Face Hub on first use)"
    return False, (f"{what}: the Hugging Face Hub is not reachable and {spec} is not in the local cache. "
                   f"{_how_to_fix(kind, size)}")


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
