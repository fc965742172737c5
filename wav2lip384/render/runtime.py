"""OpenVINO as a CPU inference runtime for a Wav2Lip-family generator: fp32, bf16 and int8 (static, calibrated).

Why OpenVINO (measured, see wav2lip384/README.md "Speed"): on the 2-core bf16 CPU its int8 path (NNCF post-training
quantisation, calibrated on the avatar's own face crops and speech windows) beat both PyTorch's bf16 path and
ONNX Runtime; ONNX Runtime was measured side by side and is not kept. It is optional: without the ``openvino`` and
``nncf`` packages :func:`available` is False and ``optimize_generator`` measures PyTorch's paths only.

:class:`RuntimeGenerator` has the generator's inference interface (``encode_audio``, ``encode_faces``,
``trim_feats``, ``decode``, ``forward``, ``img_size``, ``config``, ``first_row``, ``precision``) so the pipeline
runs it unchanged. It is built from an *already transformed* torch generator (BN folded, lower-half rows,
fp32; ``optimize.transform_generator``) split in three graphs, exported once through ONNX (opset 17):

  audio   mel (n, 1, 80, 16)             -> embedding (n, C_a, 1, 1)
  faces   faces (n, 6, S, S)             -> skip features, already trimmed to the rows the decoder reads
  decode  embedding, trimmed features    -> output rows ``first_row`` .. S-1 (n, 3, S - first_row, S)

Rows above ``first_row`` are filled as the torch model fills them (0 in ``decode``, the reference face in
``forward``); the feathered paste-back never shows them. Photo features (batch 1) are broadcast in numpy.
int8 IR files are cached under ``<cache>/runtime/`` by the key the caller gives (weights, rows, calibration id).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ONNX_OPSET = 17


def available() -> bool:
    """True when OpenVINO and NNCF can be imported (both are optional)."""
    return importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None


def version() -> str:
    """OpenVINO's version, read from the package metadata (importing openvino starts its telemetry client)."""
    from importlib.metadata import version as dist_version

    return dist_version("openvino").split("-")[0]


def _openvino():
    """The one way this project imports OpenVINO: ``import openvino`` itself starts the converter's telemetry
    client (openvino/tools/ovc/__init__.py), which writes a client id into the home folder and, without a consent
    file, counts as consent to send; the consent check is answered first (:func:`_no_telemetry`)."""
    _no_telemetry()
    import openvino

    return openvino


# -------------------------------------------------------------------------------------- graph pieces
class _Audio(nn.Module):
    def __init__(self, gen):
        super().__init__()
        self.gen = gen

    def forward(self, mel):
        return self.gen.encode_audio(mel)


class _Faces(nn.Module):
    def __init__(self, gen):
        super().__init__()
        self.gen = gen

    def forward(self, faces):
        return tuple(self.gen.trim_feats(self.gen.encode_faces(faces)))


class _Decode(nn.Module):
    def __init__(self, gen):
        super().__init__()
        self.gen = gen

    def forward(self, emb, *feats):
        return self.gen.decode(emb, list(feats))[:, :, self.gen.first_row:]


def export_onnx(gen, folder: str | os.PathLike, batch: int = 2) -> dict[str, Path]:
    """The three graphs of an fp32 generator (see the module docstring) as ONNX files with a dynamic batch."""
    from wav2lip384.render.optimize import calibration_batch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mel, faces = calibration_batch(gen.img_size, batch)
    with torch.inference_mode():
        feats = gen.trim_feats(gen.encode_faces(faces))
        emb = gen.encode_audio(mel)
    n_f = len(feats)
    f_names = [f"feat{i}" for i in range(n_f)]
    dyn = lambda names: {k: {0: "n"} for k in names}  # noqa: E731
    paths = {k: folder / f"{k}.onnx" for k in ("audio", "faces", "decode")}
    jobs = [(_Audio(gen), (mel,), ["mel"], ["emb"], paths["audio"]),
            (_Faces(gen), (faces,), ["faces"], f_names, paths["faces"]),
            (_Decode(gen), (emb, *feats), ["emb", *f_names], ["rows"], paths["decode"])]
    for module, args, ins, outs, path in jobs:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks are static per export: fine
            torch.onnx.export(module.eval(), args, str(path), input_names=ins, output_names=outs,
                              dynamic_axes=dyn(ins + outs), opset_version=ONNX_OPSET, dynamo=False)
    return paths


def _feeds(gen, mel: torch.Tensor, faces: torch.Tensor):
    """Calibration feeds of the three graphs from model inputs (torch fp32 reference parts)."""
    with torch.inference_mode():
        feats = gen.trim_feats(gen.encode_faces(faces))
        emb = gen.encode_audio(mel)
    return ([mel.numpy()], [faces.numpy()], [emb.numpy(), *(f.numpy() for f in feats)])


class RuntimeGenerator:
    """An OpenVINO-compiled generator with the torch generator's inference interface (module docstring)."""

    backend = "openvino"

    def __init__(self, gen, compiled: dict, precision_name: str):
        self.config = gen.config
        self.row_plan = gen.row_plan
        self.channels_last = False
        self.static_batch = None
        self._size = gen.img_size
        self._first_row = gen.first_row
        self._compiled = compiled
        # an OpenVINO infer request serves one inference at a time ("Infer Request is busy"), and the app renders
        # requests in parallel worker threads: each thread gets its own requests (made at its first inference)
        self._local = threading.local()
        self.runtime_precision = precision_name
        self.precision: dict = {"dtype": precision_name, "runtime": "openvino"}

    # interface of Wav2LipGenerator used by the pipeline and the bench
    @property
    def img_size(self) -> int:
        return self._size

    @property
    def first_row(self) -> int:
        return self._first_row

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.float32

    def eval(self):
        return self

    def parameters(self):  # the pipeline asks a passed generator for its input dtype
        yield torch.zeros((), dtype=torch.float32)

    def _run(self, part: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {k: c.create_infer_request() for k, c in self._compiled.items()}
        req = requests[part]
        res = req.infer([np.ascontiguousarray(a, dtype=np.float32) for a in arrays])
        return [res[o] for o in self._compiled[part].outputs]

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run("audio", [mel.float().cpu().numpy()])[0].copy())

    def encode_faces(self, faces: torch.Tensor) -> list[torch.Tensor]:
        """Skip features, already trimmed to the rows the decoder reads."""
        return [torch.from_numpy(f.copy()) for f in self._run("faces", [faces.float().cpu().numpy()])]

    def trim_feats(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return feats  # encode_faces trims already

    def decode(self, audio_embedding: torch.Tensor, feats: list[torch.Tensor],
               upper: torch.Tensor | None = None) -> torch.Tensor:
        n = audio_embedding.shape[0]
        arrays = [audio_embedding.float().numpy()]
        for f in feats:
            a = f.float().numpy()
            arrays.append(np.broadcast_to(a, (n, *a.shape[1:])) if a.shape[0] == 1 and n != 1 else a)
        rows = torch.from_numpy(self._run("decode", arrays)[0])  # (n, 3, S - first_row, S)
        out = torch.empty((n, 3, self._size, self._size), dtype=torch.float32)
        top = self._size - rows.shape[2]
        out[:, :, :top] = 0.0 if upper is None else upper[:, :, :top].float()
        out[:, :, top:] = rows
        return out

    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        upper = faces[:, 3:6] if self._first_row else None
        return self.decode(self.encode_audio(audio), self.encode_faces(faces), upper=upper)

    __call__ = forward


def _compile(model, hint: str, threads: int | None):
    ov = _openvino()

    cfg = {"NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY",
           "INFERENCE_NUM_THREADS": str(int(threads or torch.get_num_threads()))}
    if hint:
        cfg["INFERENCE_PRECISION_HINT"] = hint
    return ov.Core().compile_model(model, "CPU", cfg)


def _no_telemetry() -> None:
    """OpenVINO's model conversion (ovc) and NNCF send usage telemetry to Google Analytics unless a consent file
    in the home folder says no or they think they run in CI (openvino_telemetry: ``enable_opt_in_dialog=False``
    takes a missing file as consent). A public-service app must not phone home, and shall not write into the
    user's home to say so: the consent check answers "declined" in this process, before either is used."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # no telemetry package: both fall back to their stubs
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED


def build(gen, precision: str, *, calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
          cache_dir: str | os.PathLike | None = None, cache_key: str = "", threads: int | None = None
          ) -> RuntimeGenerator:
    """An OpenVINO :class:`RuntimeGenerator` of the transformed fp32 torch generator ``gen`` in ``precision``:
    ``"fp32"``, ``"bf16"`` (OpenVINO's bf16 inference hint) or ``"int8"`` (NNCF post-training quantisation of all
    three graphs, calibrated on ``calibration`` = (mel (n, 1, 80, 16), faces (n, 6, S, S)), the remaining ops in
    fp32). int8 IR files are cached under ``cache_dir/runtime/<key>`` when a ``cache_key`` is given."""
    ov = _openvino()
    if precision not in ("fp32", "bf16", "int8"):
        raise ValueError(f"precision must be fp32, bf16 or int8, not {precision!r}")
    cached = None
    if cache_dir and cache_key and precision == "int8":
        key = hashlib.sha256(f"{cache_key}|ov{version()}".encode()).hexdigest()[:24]
        cached = Path(cache_dir).expanduser() / "runtime" / key
    hint = "f32" if precision in ("fp32", "int8") else "bf16"
    parts = ("audio", "faces", "decode")
    if cached is not None and all((cached / f"{p}.xml").is_file() for p in parts):
        models = {p: ov.Core().read_model(str(cached / f"{p}.xml")) for p in parts}
    else:
        with tempfile.TemporaryDirectory(prefix="w2l-onnx-") as tmp:
            paths = export_onnx(gen, tmp)
            models = {p: ov.convert_model(str(paths[p])) for p in parts}
        if precision == "int8":
            models = quantize(gen, models, calibration)
            if cached is not None:
                cached.mkdir(parents=True, exist_ok=True)
                for p in parts:
                    ov.save_model(models[p], str(cached / f"{p}.xml"))
    return RuntimeGenerator(gen, {p: _compile(models[p], hint, threads) for p in parts}, precision)


def quantize(gen, models: dict, calibration: tuple[torch.Tensor, torch.Tensor] | None) -> dict:
    """NNCF static int8 of the three graphs on feeds computed from ``calibration`` (one batch per graph)."""
    _no_telemetry()
    import nncf

    from wav2lip384.render.optimize import calibration_batch

    mel, faces = calibration if calibration is not None else calibration_batch(gen.img_size, 8)
    feeds = dict(zip(("audio", "faces", "decode"), _feeds(gen, mel.float(), faces.float()), strict=True))
    return {part: nncf.quantize(model, nncf.Dataset([feeds[part]]), subset_size=1, fast_bias_correction=True)
            for part, model in models.items()}
