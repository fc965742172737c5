"""``python -m wav2lip384.models --summary``: parameters, GFLOPs per frame and state-dict tensors as JSON.

Generators are listed by registry id (``wav2lip384.models.registry``: wav2lip96, wav2lip256, livetalking384, paper384),
plus the SyncNet and discriminator at 96 and 384. Models are built and run on torch's ``meta`` device: shapes
and FLOPs without allocating or computing anything, so the 172.7 M-parameter model costs nothing here.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass with batch 1 in
eval mode. It counts convolutions, transposed convolutions and matrix products as 2 FLOPs per
multiply-accumulate (so GFLOPs = 2 x GMACs) and ignores BatchNorm, activations, concatenation and
the residual additions (well under 1 % here). "Per frame" means:
  generator      one output frame: one mel window + one 6-channel face (face encoder NOT cached)
  syncnet        one 5-frame window: 15-channel lower-half face + one mel window
  discriminator  one face (its lower half)
"""

from __future__ import annotations

import argparse
import json
import re
import sys


def _inputs(kind: str, size: int, device: str = "meta"):
    import torch

    mel = torch.zeros(1, 1, 80, 16, device=device)
    if kind == "generator":
        return (mel, torch.zeros(1, 6, size, size, device=device))
    if kind == "syncnet":
        return (mel, torch.zeros(1, 15, size // 2, size, device=device))
    return (torch.zeros(1, 3, size, size, device=device),)


def summarize(kind: str, size_or_arch: int | str, with_tensors: bool = True) -> dict:
    """One model's entry: parameters, GFLOPs per frame (counted on the meta device), output shape, tensors.
    ``size_or_arch``: 96 | 384, or a generator architecture name (``GeneratorConfig.for_arch``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from wav2lip384.models import build_model

    with torch.device("meta"):
        model = build_model(kind, size_or_arch).eval()
    size = model.config.img_size
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model(*_inputs(kind, size))
    flops = counter.get_total_flops()
    out_shapes = [list(o.shape) for o in out] if isinstance(out, tuple) else list(out.shape)
    entry = {
        "kind": kind,
        "size": size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "gflops_per_frame": round(flops / 1e9, 3),
        "gmacs_per_frame": round(flops / 2e9, 3),
        "output_shape": out_shapes,
        "n_state_dict_tensors": len(model.state_dict()),
    }
    if kind == "generator":  # what a photo avatar pays per frame once the face encoder ran once
        entry["arch"] = size_or_arch if isinstance(size_or_arch, str) else f"for_size({size_or_arch})"
        with torch.no_grad():
            feats = model.encode_faces(_inputs(kind, size)[1])
        c2 = FlopCounterMode(display=False)
        with torch.no_grad(), c2:
            model.decode(model.encode_audio(_inputs(kind, size)[0]), feats)
        entry["gflops_per_frame_cached_face"] = round(c2.get_total_flops() / 1e9, 3)
    if with_tensors:
        entry["state_dict"] = {k: list(v.shape) for k, v in model.state_dict().items()}
    return entry


def generator_table(models: dict) -> list[dict]:
    """One row per registry id (for people): id, architecture, input, parameters (M), GFLOP/frame, licence."""
    from wav2lip384.models import registry

    rows = []
    for mid in registry.ids():
        spec, e = registry.get(mid), models[f"generator_{mid}"]
        rows.append({"id": mid, "arch": spec.arch, "input": f"{e['size']}x{e['size']}",
                     "params_m": round(e["parameters"] / 1e6, 1), "gflops_per_frame": round(e["gflops_per_frame"], 1),
                     "gflops_per_frame_cached_face": round(e["gflops_per_frame_cached_face"], 1),
                     "license": spec.license or "(no published weights)"})
    return rows


def measure_speed(model_id: str, batch: int = 4, reps: int = 3, seed: int = 0) -> dict:
    """Generator-only speed of one registry model with the default transforms (random weights: the figures do
    not depend on their values): ms/frame and executed GFLOP/s for a video avatar (full forward, lower half) and
    a photo avatar (audio encoder + decoder; the face encoder ran once). Best of ``reps`` timed batches."""
    import os
    import time

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from wav2lip384.models import registry
    from wav2lip384.models import build_model
    from wav2lip384.render.optimize import DEFAULT, optimize_generator

    spec = registry.get(model_id)
    torch.manual_seed(seed)
    gen = optimize_generator(build_model("generator", spec.arch).eval(), DEFAULT, batch_size=batch)
    s = gen.img_size
    g = torch.Generator().manual_seed(seed)
    mel, faces = torch.randn(batch, 1, 80, 16, generator=g), torch.rand(batch, 6, s, s, generator=g)
    faces[:, :3, s // 2:] = 0

    def best_of(fn) -> float:
        fn()  # warm-up
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    def matmul_gflops() -> float:
        """What this CPU gives a large matmul in the model's dtype right now (the machine may be shared)."""
        a = torch.randn(1536, 1536, generator=g).to(gen.compute_dtype)
        return 2 * 1536 ** 3 / best_of(lambda: a @ a) / 1e9

    with torch.inference_mode():
        feats = gen.encode_faces(faces[:1])
        with FlopCounterMode(display=False) as full:
            gen(mel[:1], faces[:1])
        with FlopCounterMode(display=False) as part:
            gen.decode(gen.encode_audio(mel[:1]), feats)
        load_before = os.getloadavg()
        peak = matmul_gflops()
        t_video = best_of(lambda: gen(mel, faces)) / batch
        t_photo = best_of(lambda: gen.decode(gen.encode_audio(mel), feats)) / batch
        peak = max(peak, matmul_gflops())
    gf_video, gf_photo = full.get_total_flops() / 1e9, part.get_total_flops() / 1e9
    return {"model": model_id, "batch": batch, "threads": torch.get_num_threads(), "precision": gen.precision,
            "first_row": gen.first_row,
            "video": {"ms_per_frame": round(t_video * 1e3, 1), "fps": round(1 / t_video, 2),
                      "gflops_per_frame_executed": round(gf_video, 1), "achieved_gflops": round(gf_video / t_video, 1)},
            "photo": {"ms_per_frame": round(t_photo * 1e3, 1), "fps": round(1 / t_photo, 2),
                      "gflops_per_frame_executed": round(gf_photo, 1), "achieved_gflops": round(gf_photo / t_photo, 1)},
            "matmul_gflops_same_time": round(peak, 1),
            "share_of_matmul": {"video": round(gf_video / t_video / peak, 2), "photo": round(gf_photo / t_photo / peak, 2)},
            "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wav2lip384.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary", action="store_true", help="print the JSON summary of every architecture")
    parser.add_argument("--no-tensors", action="store_true", help="omit the state-dict tensor lists")
    parser.add_argument("--speed", metavar="ID", action="append",
                        help="time the generator alone (default transforms) for a registry id; repeatable")
    parser.add_argument("--batch", type=int, default=4, help="batch for --speed (default 4)")
    args = parser.parse_args(argv)
    if args.speed:
        for mid in args.speed:
            sys.stdout.write(json.dumps(measure_speed(mid, batch=args.batch)) + "\n")
        return 0
    if not args.summary:
        parser.print_help()
        return 0
    from wav2lip384.models import registry

    models = {f"generator_{mid}": {"registry_id": mid, **summarize("generator", registry.get(mid).arch,
                                                                   with_tensors=not args.no_tensors)}
              for mid in registry.ids()}
    models.update({f"{kind}_{size}": summarize(kind, size, with_tensors=not args.no_tensors)
                   for kind in ("syncnet", "discriminator") for size in (96, 384)})
    report = {
        "flop_counter": "torch.utils.flop_counter.FlopCounterMode, batch 1, eval, meta device; GFLOPs = 2 x GMACs "
                        "(convolutions and matmuls only; BatchNorm/activations/concat/attention pooling not counted)",
        "generators": generator_table(models),
        "models": models,
    }
    text = json.dumps(report, indent=1)
    # keep each shape on one line: "[\n  512,\n  256\n ]" -> "[512, 256]"
    text = re.sub(r"\[([-\d.,\s]*)\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",") if x.strip()) + "]", text)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
