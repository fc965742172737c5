"""The lip-sync networks and the facts about them.

- ``config.py``: the architecture dataclasses (generator, SyncNet, discriminator; audio features).
- ``registry.py``: one entry per generator model id (weights default, batch, crop, UI defaults).
- ``blocks.py``, ``generator.py``, ``rows.py`` (lower-half row planning), ``syncnet.py``, ``discriminator.py``: the modules.
- ``build.py``: ``build_model("generator", 384)``, ``build_model("generator", "livetalking384_sam")``,
  ``build_model("syncnet", SyncNetConfig.for_size(96))``.
- ``python -m wav2lip384.models --summary``: parameter counts and shapes.

Importing this package is cheap (``registry`` and ``config`` need no torch); the model classes and
``build_model`` are loaded when first used (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import importlib

_LAZY = {name: "wav2lip384.models.build" for name in
         ("Wav2LipGenerator", "SyncNet", "QualityDiscriminator", "MODEL_CLASSES", "build_model", "model_kind")}

__all__ = ["Wav2LipGenerator", "SyncNet", "QualityDiscriminator", "MODEL_CLASSES", "build_model", "model_kind"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wav2lip384.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
