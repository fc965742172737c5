"""``on_gpu``: run a rendering entry point inside ``spaces.GPU`` on a Hugging Face ZeroGPU Space; a no-op elsewhere.

On ZeroGPU a GPU is attached only while a function decorated with ``spaces.GPU`` runs. The ``spaces`` package is
installed on Spaces only; without it (or when it is present but not on ZeroGPU, where its decorator returns the
function unchanged) ``on_gpu`` returns the function itself. Services wrap the call that renders::

    from wav2lip384.render.gpu import on_gpu
    render = on_gpu(pipeline.__call__, duration=120)

``DH_DEVICE=cuda`` (``Settings.device``) is what puts the models on the GPU; there ``optimize_generator``'s "auto"
times and verifies fp32, fp16 and bf16 as it does on the CPU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def zero_gpu_available() -> bool:
    """True when the ``spaces`` package can be imported (a Hugging Face Space)."""
    return importlib.util.find_spec("spaces") is not None


def on_gpu(fn: F | None = None, *, duration: int | None = None):
    """``spaces.GPU(fn)`` (with ``duration`` seconds when given) where ``spaces`` is installed; else ``fn``.
    Usable as ``on_gpu(fn)``, ``@on_gpu`` or ``@on_gpu(duration=120)``."""
    if fn is None:
        return lambda f: on_gpu(f, duration=duration)
    if not zero_gpu_available():
        return fn
    import spaces

    return spaces.GPU(duration=duration)(fn) if duration else spaces.GPU(fn)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
