"""Between training checkpoints and the inference format.

- :func:`model_from_checkpoint`: rebuild the trained model (generator or SyncNet) from a training checkpoint
  (defined in :mod:`wav2lip384.weights`, re-exported here: inference code never imports the trainers).
- :func:`export_model`: write it as ``wav2lip384.weights.save_pretrained`` does (``model.safetensors`` +
  ``config.json``, which ``from_pretrained`` / the inference pipeline load) plus ``training.json`` (data,
  steps, metrics) for the model card.
- :func:`load_expert`: the frozen SyncNet for generator training, from a training checkpoint, an exported
  folder or a Hub repo (also defined in :mod:`wav2lip384.weights`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from wav2lip384.weights import load_expert, model_from_checkpoint

__all__ = ["TRAINING_INFO", "data_summary", "export_model", "load_expert", "model_from_checkpoint"]

TRAINING_INFO = "training.json"


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
