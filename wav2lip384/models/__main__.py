"""``python -m wav2lip384.models --summary``: parameters, GFLOPs per frame and state-dict tensors as JSON.

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


def _inputs(kind: str, size: int):
    import torch

    mel = torch.zeros(1, 1, 80, 16)
    if kind == "generator":
        return (mel, torch.zeros(1, 6, size, size))
    if kind == "syncnet":
        return (mel, torch.zeros(1, 15, size // 2, size))
    return (torch.zeros(1, 3, size, size),)


def summarize(kind: str, size: int, with_tensors: bool = True) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from wav2lip384.models import build_model

    model = build_model(kind, size).eval()
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
        with torch.no_grad():
            feats = model.encode_faces(_inputs(kind, size)[1])
        c2 = FlopCounterMode(display=False)
        with torch.no_grad(), c2:
            model.decode(model.encode_audio(_inputs(kind, size)[0]), feats)
        entry["gflops_per_frame_cached_face"] = round(c2.get_total_flops() / 1e9, 3)
    if with_tensors:
        entry["state_dict"] = {k: list(v.shape) for k, v in model.state_dict().items()}
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wav2lip384.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary", action="store_true", help="print the JSON summary of every architecture")
    parser.add_argument("--no-tensors", action="store_true", help="omit the state-dict tensor lists")
    args = parser.parse_args(argv)
    if not args.summary:
        parser.print_help()
        return 0
    report = {
        "flop_counter": "torch.utils.flop_counter.FlopCounterMode, batch 1, eval; GFLOPs = 2 x GMACs "
                        "(convolutions and matmuls only; BatchNorm/activations/concat not counted)",
        "models": {
            f"{kind}_{size}": summarize(kind, size, with_tensors=not args.no_tensors)
            for kind in ("generator", "syncnet", "discriminator")
            for size in (96, 384)
        },
    }
    text = json.dumps(report, indent=1)
    # keep each shape on one line: "[\n  512,\n  256\n ]" -> "[512, 256]"
    text = re.sub(r"\[([-\d.,\s]*)\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",") if x.strip()) + "]", text)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
