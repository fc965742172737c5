"""Find, load and save lip-sync weights.

Two formats:
- **original** Wav2Lip checkpoints (``wav2lip_gan.pth``, ``wav2lip.pth``, ``lipsync_expert.pth``): a pickled
  ``{"state_dict": ...}`` (or a bare state dict), possibly saved from ``nn.DataParallel`` (``module.``
  prefixes). Loaded with ``torch.load(weights_only=True)``, which refuses arbitrary pickled code.
- **ours**: a directory with ``model.safetensors`` + ``config.json`` (the architecture as data, so a
  checkpoint always rebuilds the network it was trained as). Written by :func:`save_pretrained`.

A *spec* is a local file or directory, or a Hub reference: ``owner/name:path/in/repo.pth`` for one file,
``owner/name`` for a repo in our format. All Hub access goes through :mod:`common.hub` so that offline use
fails at once with a clear :class:`UserFacingError`.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

from common.errors import UserFacingError
from common.hub import HubFile, hub_reachable, resolve_file, resolve_snapshot
from common.settings import Settings

FORMAT_NAME = "wav2lip384"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def _setting_default(name: str) -> str:
    return next(f.default for f in fields(Settings) if f.name == name)


DEFAULT_GENERATOR_96 = _setting_default("wav2lip96_checkpoint")  # camenduru/Wav2Lip:checkpoints/wav2lip_gan.pth

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
def load_state_dict_file(path: str | os.PathLike) -> dict:
    """A checkpoint file -> {name: tensor} (``.safetensors`` or a torch pickle, ``module.`` stripped)."""
    import torch

    p = Path(os.fspath(path))
    if not p.is_file():
        raise UserFacingError(f"Checkpoint {p} does not exist.")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(p), device="cpu")
        except Exception as err:
            raise UserFacingError(f"{p.name} is not a readable safetensors file ({err}).") from err
    else:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as err:
            raise UserFacingError(
                f"{p.name} is not a loadable PyTorch checkpoint ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Only plain tensor checkpoints are accepted "
                "(torch.load weights_only=True)."
            ) from err
        if isinstance(obj, dict) and isinstance(obj.get("models"), dict) and "task" in obj:
            raise UserFacingError(
                f"{p.name} is a `python -m wav2lip384.train` training checkpoint, not inference weights: use the "
                "export/ folder the trainer writes next to it (model.safetensors + config.json)."
            )
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
        if not isinstance(sd, dict) or not sd:
            raise UserFacingError(f"{p.name} holds no state dict (expected {{'state_dict': ...}} or a dict of tensors).")
    out = {}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. a stray step counter next to the tensors
        name = key[len("module."):] if key.startswith("module.") else key  # saved from nn.DataParallel
        out[name] = value
    if not out:
        raise UserFacingError(f"{p.name} contains no tensors.")
    return out


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
# Entry points used by the pipeline, training and evaluation
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
    """Load a ``kind`` model ('generator' | 'syncnet' | 'discriminator') of ``size`` from ``spec``.

    ``spec`` None/empty -> the default (only the 96 generator has public weights). Original ``.pth`` files
    are loaded into the built-in architecture of ``size``; our format rebuilds its saved architecture and
    must be of ``kind`` and ``size``.
    """
    import torch

    from wav2lip384.models import build_model, model_kind

    if size not in (96, 384):
        raise UserFacingError(f"Model size must be 96 or 384, not {size}.")
    dtype = dtype or torch.float32
    what, how = _what(kind, size), _how_to_fix(kind, size)
    spec = os.fspath(spec) if spec else _default_spec(kind, size)
    if not spec:
        raise UserFacingError(how if kind != "generator" or size == 384 else f"{what}: no checkpoint configured. {how}")
    try:
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
    except UserFacingError as err:
        if size == 384 and kind == "generator" and NO_384_WEIGHTS not in str(err):
            raise UserFacingError(f"{err} {NO_384_WEIGHTS}") from err
        raise


def load_generator(spec: str | os.PathLike | None = None, size: int = 96, device="cpu", dtype=None):
    """The Wav2Lip generator of ``size`` (96 | 384), eval mode, on ``device``/``dtype``."""
    return load_model("generator", spec, size, device=device, dtype=dtype)


def load_syncnet(spec: str | os.PathLike | None = None, size: int = 96, device="cpu", dtype=None):
    """The SyncNet expert of ``size`` (96 | 384), eval mode, on ``device``/``dtype``."""
    return load_model("syncnet", spec, size, device=device, dtype=dtype)


def weights_status(spec: str | os.PathLike | None, size: int, kind: str = "generator") -> tuple[bool, str]:
    """(available, message) for a status panel, WITHOUT downloading: local file, HF cache, or Hub reachable."""
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
