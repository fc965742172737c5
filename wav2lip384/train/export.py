"""Between training checkpoints and the inference format.

- :func:`model_from_checkpoint`: rebuild the trained model (generator or SyncNet) from a training checkpoint.
- :func:`export_model`: write it as ``wav2lip384.weights.save_pretrained`` does (``model.safetensors`` +
  ``config.json``, which ``from_pretrained`` / the inference pipeline load) plus ``training.json`` (data,
  steps, metrics) for the model card.
- :func:`load_expert`: the frozen SyncNet for generator training, from a training checkpoint, an exported
  folder or a Hub repo.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from common.errors import UserFacingError

TRAINING_INFO = "training.json"


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode on CPU, info) for a ``wav2lip384.train`` checkpoint."""
    from wav2lip384.models import build_model
    from wav2lip384.train.loop import load_checkpoint

    ckpt = load_checkpoint(path)
    task, tcfg = ckpt["task"], ckpt["task_config"]
    from wav2lip384.config import GeneratorConfig, SyncNetConfig

    if task == "syncnet":
        kind, key = "syncnet", "syncnet"
        config = SyncNetConfig.from_dict(tcfg["model"]) if tcfg.get("model") else SyncNetConfig.for_size(tcfg["size"])
    elif task == "generator":
        kind, key = "generator", "generator"
        config = GeneratorConfig.from_dict(tcfg["model"]) if tcfg.get("model") else GeneratorConfig.for_size(
            tcfg["size"])
    else:
        raise UserFacingError(f"{path}: unknown task {task!r}")
    model = build_model(kind, config)
    model.load_state_dict(ckpt["models"][key])
    model.eval()
    history = ckpt.get("history", [])
    info = {"task": task, "step": int(ckpt["step"]), "task_config": tcfg, "train_config": ckpt["train_config"],
            "world_size": ckpt.get("world_size", 1), "task_state": ckpt.get("task_state", {}),
            "last_train": _last(history, "train"),
            "last_val": _last(history, "val")}
    return model, info


def _last(history: list[dict], split: str) -> dict | None:
    rows = [r for r in history if r.get("split") == split]
    return rows[-1] if rows else None


def data_summary(data_dir: str | Path) -> dict[str, Any]:
    try:
        from wav2lip384.train.data import manifest_summary

        return manifest_summary(str(Path(data_dir).resolve()))
    except Exception as err:  # data moved since training: say so in the card instead of failing
        return {"unavailable": f"{data_dir}: {type(err).__name__}: {err}"}


def export_model(model: torch.nn.Module, out_dir: str | Path, *, task: str, data: str | Path,
                 summary: dict[str, Any]) -> Path:
    """Save ``model`` in the inference format into ``out_dir`` with a ``training.json`` beside it."""
    from wav2lip384 import weights

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights.save_pretrained(model, out_dir)
    info = {"task": task, "data": str(data), "data_summary": data_summary(data), **summary}
    (out_dir / TRAINING_INFO).write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
    return out_dir


def load_expert(spec: str | Path, size: int, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The expert SyncNet: a training checkpoint file (.pt), an exported folder (``save_pretrained``), or
    anything ``weights.load_syncnet`` accepts (original ``lipsync_expert.pth``, Hub repo / file)."""
    from wav2lip384 import weights
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
        model = weights.from_pretrained(path, device=device, what="expert SyncNet")
        if model_kind(model) != "syncnet":
            raise UserFacingError(f"{spec} holds a {model_kind(model)}, not a SyncNet")
        return model
    if path.suffix in (".pt", ".pth", ".safetensors") or path.is_absolute() or str(spec).startswith("."):
        raise UserFacingError(f"expert SyncNet: nothing at {path}. Pass the last.pt or export/ folder of "
                              "`python -m wav2lip384.train syncnet`, or a Hub repo.")
    return weights.load_syncnet(str(spec), size=size, device=device)
