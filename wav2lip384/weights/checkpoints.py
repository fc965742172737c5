"""Training checkpoints of ``python -m wav2lip384.train``: the ONE reader (:func:`read_training_checkpoint`, also
used by the trainer to resume) and their conversion to inference models (:func:`model_from_checkpoint`,
:func:`load_expert`). Inference code imports these from here, never from the trainers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from common.errors import UserFacingError
from wav2lip384.weights.io import from_pretrained
from wav2lip384.weights.load import load_syncnet

TRAINING_CHECKPOINT_FORMAT = "wav2lip384-train-checkpoint/1"  # the "format" entry of wav2lip384.train checkpoints


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
    from wav2lip384.models.config import GeneratorConfig, SyncNetConfig
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
