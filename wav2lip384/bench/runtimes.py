"""``runtimes_<M>``: the generator's per-frame work on each CPU runtime and precision, side by side.

What a request runs per batch (audio encoder + decoder on cached, trimmed face features; exact transforms: BN
folded, lower-half rows), on the avatar's own face crops and speech windows, timed best-of-N after a warm-up:
  torch fp32 / bf16 (channels_last), OpenVINO fp32 / bf16 / int8 (NNCF, calibrated on half of the avatar's batch)
  and ONNX Runtime fp32 / int8 (static QDQ, calibrated on the same half). Each row: frames/s, ms/frame, and its
mean / p99 / max difference from torch fp32 in 8-bit grey levels on the rows the paste-back shows.

ONNX Runtime is measured here only (requirements-dev.txt; the app does not use it: it lost to OpenVINO, see
wav2lip384/README.md); without it those rows are skipped. OpenVINO rows need ``openvino`` and ``nncf``.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path


def _time(fn, n: int, repeats: int) -> tuple[float, object]:
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best, out


def bench_runtimes(gen, mel, faces, repeats: int = 2, threads: int | None = None) -> dict:
    """Rows per runtime/precision (module docstring); ``mel``/``faces`` = the avatar's calibration batch."""
    import torch

    from wav2lip384.render import runtime
    from wav2lip384.render.optimize import diff_levels, transform_generator

    n = len(mel)
    half = max(1, n // 2)
    res: dict = {"batch": n, "what": __doc__.split("\n\n")[1].replace("\n", " ")}
    fp = transform_generator(gen, channels_last=False)
    r = fp.first_row

    def torch_fn(model):
        feats = model.trim_feats(model.encode_faces(faces))
        return lambda: model.decode(model.encode_audio(mel), feats)

    with torch.inference_mode():
        ref_fps, ref = _time(torch_fn(transform_generator(gen)), n, repeats)
        rows = {"torch-fp32": ref_fps}
        outs = {}
        fps, outs["torch-bf16"] = _time(torch_fn(transform_generator(gen, dtype=torch.bfloat16)), n, repeats)
        rows["torch-bf16"] = fps
    if runtime.available():
        for prec in ("fp32", "bf16", "int8"):
            name = f"openvino-{prec}"
            try:
                t = time.perf_counter()
                m = runtime.build(fp, prec, calibration=(mel[:half], faces[:half]), threads=threads)
                res.setdefault("build_s", {})[name] = round(time.perf_counter() - t, 1)
                rows[name], outs[name] = _time(torch_fn(m), n, repeats)
            except Exception as e:
                res[name] = {"error": str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__}
    if importlib.util.find_spec("onnxruntime") is not None:
        try:
            _onnxruntime_rows(fp, mel, faces, half, repeats, threads, rows, outs, res)
        except Exception as e:
            res["onnxruntime"] = {"error": str(e).strip().splitlines()[-1][:300]}
    for name, fps in rows.items():
        entry = {"fps": round(fps, 2), "ms_per_frame": round(1000 / fps, 2), "vs_torch_fp32": round(fps / ref_fps, 2)}
        if name in outs:
            entry.update(diff_levels(outs[name], ref, r))
        res[name] = entry
    return res


def _onnxruntime_rows(fp, mel, faces, half, repeats, threads, rows, outs, res):
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from wav2lip384.render import runtime

    res["onnxruntime_version"] = ort.__version__
    with tempfile.TemporaryDirectory(prefix="w2l-ort-") as tmp:
        paths = runtime.export_onnx(fp, tmp)
        with torch.inference_mode():
            feats = [f.numpy() for f in fp.trim_feats(fp.encode_faces(faces))]
            emb = fp.encode_audio(mel).numpy()
        names = ["emb"] + [f"feat{i}" for i in range(len(feats))]
        feed = dict(zip(names, [emb, *feats], strict=True))

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter([{k: v[:half] for k, v in feed.items()}])

            def get_next(self):
                return next(self.items, None)

        q = Path(tmp) / "decode_int8.onnx"
        t = time.perf_counter()
        quantize_static(str(paths["decode"]), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        res.setdefault("build_s", {})["onnxruntime-int8"] = round(time.perf_counter() - t, 1)
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        top = fp.img_size - fp.first_row
        for name, path in (("onnxruntime-fp32", paths["decode"]), ("onnxruntime-int8", q)):
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            # decode only (the audio encoder is < 2 % of the work): compared with the rows torch computes
            fps, y = _time(lambda s=sess: s.run(None, feed)[0], len(emb), repeats)
            out = torch.zeros((len(emb), 3, fp.img_size, fp.img_size))
            out[:, :, fp.img_size - top:] = torch.from_numpy(y)
            rows[name], outs[name] = fps, out
