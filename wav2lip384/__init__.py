"""Lip-sync core: Wav2Lip-96 and the paper's Wav2Lip-384 (models, audio features, weights, pipeline).

Importing this package is cheap: names below are re-exported lazily (PEP 562 ``__getattr__``), so
``import wav2lip384`` does not import torch, librosa or ffmpeg helpers until one of them is used.
"""

from __future__ import annotations

import importlib

# public name -> submodule that defines it
_LAZY = {
    "AudioConfig": "wav2lip384.models.config",
    "GeneratorConfig": "wav2lip384.models.config",
    "SyncNetConfig": "wav2lip384.models.config",
    "DiscriminatorConfig": "wav2lip384.models.config",
    "load_audio": "wav2lip384.media.audio",
    "melspectrogram": "wav2lip384.media.audio",
    "mel_windows": "wav2lip384.media.audio",
    "build_model": "wav2lip384.models",
    "Wav2LipGenerator": "wav2lip384.models",
    "SyncNet": "wav2lip384.models",
    "QualityDiscriminator": "wav2lip384.models",
    "load_generator": "wav2lip384.weights",
    "load_syncnet": "wav2lip384.weights",
    "generator_status": "wav2lip384.weights",
    "weights_provenance": "wav2lip384.weights",
    "save_pretrained": "wav2lip384.weights",
    "from_pretrained": "wav2lip384.weights",
    "LipSyncPipeline": "wav2lip384.render.pipeline",
    "LipSyncResult": "wav2lip384.render.pipeline",
    "AvatarCache": "wav2lip384.render.avatars",
    "square_crop_box": "wav2lip384.faces",
    "build_detector": "wav2lip384.faces",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wav2lip384' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
