"""Reading and writing weights: state dicts from ``.pth``/``.safetensors`` files, the key-for-key check, and
our own format (``model.safetensors`` + ``config.json``: :func:`save_pretrained` / :func:`from_pretrained`).
Also what a weights *spec* names (:func:`_locate`), without the network. See :mod:`wav2lip384.weights`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from common.errors import UserFacingError
from common.hub import HubFile, resolve_file, resolve_snapshot

FORMAT_NAME = "wav2lip384"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


PICKLE_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".model", ".bin")

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
    from wav2lip384.models.config import CONFIG_CLASSES

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
# Weights specs: what a local path or Hub reference names, without the network
# ---------------------------------------------------------------------------------------------------------
def _is_local_like(spec_str: str) -> bool:
    p = Path(spec_str).expanduser()
    return (p.exists() or p.is_absolute() or spec_str.startswith((".", "~"))
            or (":" not in spec_str and p.suffix.lower() in PICKLE_SUFFIXES + (".safetensors",)))


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
