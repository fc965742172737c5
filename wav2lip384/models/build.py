"""build_model / model_kind: lip-sync networks built from the config dataclasses in :mod:`wav2lip384.models.config`.

``build_model("generator", 384)``, ``build_model("generator", "livetalking384_sam")`` or
``build_model("syncnet", SyncNetConfig.for_size(96))``.
"""

from __future__ import annotations

from torch import nn

from wav2lip384.models.config import CONFIG_CLASSES, DiscriminatorConfig, GeneratorConfig, SyncNetConfig
from wav2lip384.models.discriminator import QualityDiscriminator
from wav2lip384.models.generator import Wav2LipGenerator
from wav2lip384.models.syncnet import SyncNet

MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "generator": Wav2LipGenerator,
    "syncnet": SyncNet,
    "discriminator": QualityDiscriminator,
}


def model_kind(model: nn.Module) -> str:
    """'generator' | 'syncnet' | 'discriminator' for one of our models."""
    for kind, cls in MODEL_CLASSES.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"{type(model).__name__} is not one of {sorted(MODEL_CLASSES)}")


def build_model(kind: str,
                size_or_config: int | str | GeneratorConfig | SyncNetConfig | DiscriminatorConfig) -> nn.Module:
    """A freshly initialised model of ``kind`` for a size (96 | 384), a generator architecture name
    (``GeneratorConfig.for_arch``: "wav2lip96", "paper384", "wav2lip_v2_256", "livetalking384_sam") or a config."""
    if kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_CLASSES)}")
    config = size_or_config
    if isinstance(size_or_config, int):
        config = CONFIG_CLASSES[kind].for_size(size_or_config)
    elif isinstance(size_or_config, str):
        if kind != "generator":
            raise ValueError(f"architecture names are for generators; give the {kind} a size (96 | 384)")
        config = GeneratorConfig.for_arch(size_or_config)
    return MODEL_CLASSES[kind](config)


__all__ = ["Wav2LipGenerator", "SyncNet", "QualityDiscriminator", "MODEL_CLASSES", "build_model", "model_kind"]
