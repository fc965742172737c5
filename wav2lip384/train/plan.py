"""``--dry-run``: what a training run will cost, before it starts.

Prints the dataset's hours, steps per epoch, memory per GPU and an estimated time per epoch on a named GPU
class, from FLOPs *counted* on the real architectures (``torch.utils.flop_counter.FlopCounterMode`` over one
forward + backward of a training step, run on the ``meta`` device: shapes only, no memory, no weights) and
the saved-for-backward activations measured the same way (``saved_tensors_hooks``).

Assumptions (stated in the output too):
- peak = the vendor's dense (no sparsity) FP16/BF16 tensor-core TFLOP/s; the loop's AMP runs float16 on CUDA;
- utilisation (model FLOPs utilisation, MFU) = ``DEFAULT_MFU`` (35 %) unless ``--mfu`` says otherwise: a
  typical figure for mid-sized convolutional networks under AMP with channels of 32-512; it is the least
  certain number here: measure it on the first 100 steps (``time_s`` in metrics.jsonl) and rerun with --mfu;
- memory = trainable weights + gradients + Adam moments (16 bytes/parameter) + frozen weights (4) + a DDP
  gradient bucket copy (4, multi-GPU only) + activations saved for backward (measured in float32, halved
  under AMP) x batch, plus 20 % allocator/workspace slack and 1 GiB for the CUDA context;
- an epoch = one sample per training frame (samples are drawn at random positions, see ``data.py``);
  validation, checkpoints, data loading and the gradient all-reduce are not in the time (data loading is
  checked separately: the measured CPU time per sample says how many DataLoader workers keep a GPU busy).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# name: (dense FP16/BF16 tensor TFLOP/s from the vendor's datasheet, memory GiB)
GPU_CLASSES: dict[str, tuple[float, float]] = {
    "H100-SXM-80GB": (989.0, 80),
    "H100-PCIe-80GB": (756.0, 80),
    "A100-80GB": (312.0, 80),
    "A100-40GB": (312.0, 40),
    "L40S-48GB": (362.0, 48),
    "A10-24GB": (125.0, 24),
    "L4-24GB": (121.0, 24),
    "RTX4090-24GB": (165.0, 24),  # FP32 accumulate (what autocast uses)
    "RTX3090-24GB": (71.0, 24),
    "V100-32GB": (125.0, 32),  # FP16 only (no BF16); the loop's AMP is FP16
    "T4-16GB": (65.0, 16),
}
DEFAULT_GPU = "A100-80GB"
DEFAULT_MFU = 0.35
FPS = 25


@dataclass(frozen=True)
class StepCost:
    """One training step's cost per sample, counted on the real architectures."""

    flops_per_sample: float  # forward + backward of every model the step runs (FlopCounterMode: 2 x MACs)
    activation_bytes_per_sample: float  # saved for backward, float32
    trainable_params: int
    frozen_params: int


def _saved_bytes():
    box: dict[int, int] = {}

    def pack(t):
        box[id(t)] = t.numel() * t.element_size()
        return t

    return box, pack


def measure_step_cost(task) -> StepCost:
    """Count a step of ``task`` (a SyncNetTask or GeneratorTask) on the meta device (seconds, no memory)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from wav2lip384.models import QualityDiscriminator, SyncNet, Wav2LipGenerator

    b = 2  # batch norm in training mode needs > 1 value per channel; costs are divided by b
    box, pack = _saved_bytes()
    if task.name == "syncnet":
        cfg = task.cfg.model_config()
        s = cfg.img_size
        with torch.device("meta"):
            net = SyncNet(cfg)
        trainable, frozen = sum(p.numel() for p in net.parameters()), 0
        with FlopCounterMode(display=False) as fc, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            a, v = net(torch.empty(b, 1, 80, 16, device="meta"), torch.empty(b, 15, s - s // 2, s, device="meta"))
            (a * v).sum().backward()  # the cosine/BCE tail is negligible
        flops = fc.get_total_flops()
    else:
        from wav2lip384.train.generator import lower_half_stack

        gcfg = task.cfg.generator_config()
        s = gcfg.img_size
        with torch.device("meta"):
            gen = Wav2LipGenerator(gcfg)
            expert = SyncNet(_expert_config_for(task)).eval()  # the size's standard expert (not loaded)
            disc = QualityDiscriminator(task.cfg.disc_config()) if task.cfg.gan else None
        for p in expert.parameters():
            p.requires_grad_(False)
        trainable = sum(p.numel() for p in gen.parameters()) + (sum(p.numel() for p in disc.parameters())
                                                                if disc is not None else 0)
        frozen = sum(p.numel() for p in expert.parameters())
        with FlopCounterMode(display=False) as fc, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            g = gen(torch.empty(b, 5, 1, 80, 16, device="meta"), torch.empty(b, 6, 5, s, s, device="meta"))
            a, v = expert(torch.empty(b, 1, 80, 16, device="meta"), lower_half_stack(g))  # sync loss (on)
            loss = (a * v).sum() + g.mean()
            if disc is not None:
                loss = loss + disc(g).mean()  # perceptual loss through D
            loss.backward()
            if disc is not None:  # the discriminator's own step on real + fake
                disc(torch.cat([g.detach(), g.detach()], 0)).mean().backward()
        flops = fc.get_total_flops()
    return StepCost(flops / b, sum(box.values()) / b, int(trainable), int(frozen))


def _expert_config_for(task):
    """The expert's architecture for a generator task: the standard SyncNet of its size (tiny for tiny runs)."""
    from wav2lip384.models.config import SyncNetConfig

    if task.cfg.model is not None:
        from wav2lip384.train import tiny

        return tiny.tiny_syncnet_config()
    return SyncNetConfig.for_size(task.cfg.size)


def data_hours(data_dir: str | None, hours: float | None) -> dict[str, Any]:
    """Train/val hours and frames from the manifest, or an assumed size (``--hours``) for planning."""
    if data_dir is None or hours is not None:
        frames = int(round((hours or 0.0) * 3600 * FPS))
        return {"assumed": True, "train_hours": hours or 0.0, "train_frames": frames, "val_hours": None,
                "train_clips": None, "val_clips": None, "speakers": None, "split_by": None}
    from wav2lip384.train.data import read_manifest

    m = read_manifest(data_dir)
    out: dict[str, Any] = {"assumed": False, "split_by": (m.get("split") or {}).get("by")}
    for split in ("train", "val"):
        cs = [c for c in m["clips"] if c["split"] == split]
        frames = sum(int(c["n_frames"]) for c in cs)
        out[f"{split}_frames"] = frames
        out[f"{split}_hours"] = frames / FPS / 3600
        out[f"{split}_clips"] = len(cs)
    out["speakers"] = len({c.get("speaker", c["source"]) for c in m["clips"]})
    return out


def sample_seconds(dataset, n: int = 6) -> float:
    """Measured CPU seconds to build one training sample (JPEG decode, mel, stacking) in this process."""
    dataset[0]  # warm-up: imports, the first mel
    t = time.perf_counter()
    for i in range(1, n + 1):
        dataset[i]
    return (time.perf_counter() - t) / n


def make_plan(task, *, data_dir: str | None, batch_size: int, gpus: int, gpu: str = DEFAULT_GPU,
              mfu: float = DEFAULT_MFU, amp: bool = True, hours: float | None = None, steps: int | None = None,
              measure_data: bool = True) -> dict[str, Any]:
    from common.errors import UserFacingError

    if gpu not in GPU_CLASSES:
        raise UserFacingError(f"unknown GPU class {gpu!r}; known: {', '.join(GPU_CLASSES)}")
    if not 0 < mfu <= 1:
        raise UserFacingError(f"--mfu must be in (0, 1], got {mfu}")
    if batch_size < 1 or gpus < 1:
        raise UserFacingError("--batch-size and --gpus must be at least 1")
    data = data_hours(data_dir, hours)
    cost = measure_step_cost(task)
    global_batch = batch_size * gpus
    steps_per_epoch = max(1, math.ceil(data["train_frames"] / global_batch)) if data["train_frames"] else 0
    act = cost.activation_bytes_per_sample * (0.5 if amp else 1.0) * batch_size
    static = 16 * cost.trainable_params + 4 * cost.frozen_params + (4 * cost.trainable_params if gpus > 1 else 0)
    mem_gib = (static + act) * 1.2 / 2**30 + 1.0
    rows = []
    for name, (peak, mem) in GPU_CLASSES.items():
        step_s = batch_size * cost.flops_per_sample / (peak * 1e12 * mfu)
        rows.append({"gpu": name, "peak_tflops": peak, "memory_gib": mem, "fits": mem_gib <= mem,
                     "step_s": step_s, "epoch_h": steps_per_epoch * step_s / 3600,
                     "samples_per_s_per_gpu": batch_size / step_s})
    chosen = next(r for r in rows if r["gpu"] == gpu)
    sample_s = None
    if measure_data and data_dir is not None:
        sample_s = sample_seconds(task.train_dataset())
    plan = {
        "task": task.name, "size": task.cfg.generator_config().img_size if task.name == "generator"
        else task.cfg.model_config().img_size,
        "data": data, "batch_per_gpu": batch_size, "gpus": gpus, "global_batch": global_batch,
        "steps_per_epoch": steps_per_epoch, "cost": asdict(cost),
        "gflops_per_step_per_gpu": batch_size * cost.flops_per_sample / 1e9,
        "memory_per_gpu_gib": round(mem_gib, 2), "amp": amp, "mfu": mfu, "gpu": gpu,
        "epoch_hours": chosen["epoch_h"], "step_seconds": chosen["step_s"], "fits": chosen["fits"],
        "gpu_table": rows,
        "cpu_seconds_per_sample": sample_s,
        "workers_per_gpu": (math.ceil(sample_s * batch_size / chosen["step_s"]) if sample_s else None),
    }
    if steps:
        plan["steps"] = steps
        plan["epochs"] = steps / steps_per_epoch if steps_per_epoch else None
        plan["total_hours"] = steps * chosen["step_s"] / 3600
    return plan


def _dur(hours: float) -> str:
    s = hours * 3600
    return f"{s:.3g} s" if s < 120 else f"{s / 60:.3g} min" if s < 7200 else f"{hours:.3g} h"


def format_plan(p: dict[str, Any]) -> str:
    d = p["data"]
    lines = [f"dry run: {p['task']}-{p['size']} (nothing trained)"]
    if d["assumed"]:
        lines.append(f"data: {d['train_hours']:.2f} h assumed (--hours), {d['train_frames']:,} frames at 25 fps")
    else:
        lines.append(f"data: train {d['train_hours']:.3g} h = {d['train_hours'] * 60:.3g} min ({d['train_frames']:,} "
                     f"frames, {d['train_clips']} clips), validation {d['val_hours'] * 60:.3g} min "
                     f"({d['val_clips']} clips), {d['speakers']} speaker(s), split by {d['split_by'] or '(not recorded)'}")
    c = p["cost"]
    lines += [
        f"batch: {p['batch_per_gpu']}/GPU x {p['gpus']} GPU(s) = {p['global_batch']}; "
        f"steps per epoch (one sample per training frame): {p['steps_per_epoch']:,}",
        f"model: {c['trainable_params'] / 1e6:.1f} M trainable + {c['frozen_params'] / 1e6:.1f} M frozen parameters; "
        f"counted {c['flops_per_sample'] / 1e9:.1f} GFLOP per sample per step (forward + backward), "
        f"{p['gflops_per_step_per_gpu']:.0f} GFLOP per step per GPU",
        f"memory per GPU: {p['memory_per_gpu_gib']:.1f} GiB (weights+grads+Adam, activations "
        f"{c['activation_bytes_per_sample'] / 2**20:.0f} MiB/sample fp32{', halved by AMP' if p['amp'] else ''}, "
        f"+20 % slack, +1 GiB CUDA context)",
        f"estimate on {p['gpu']} at {p['mfu']:.0%} utilisation of the dense FP16/BF16 peak: "
        f"{p['step_seconds']:.3g} s/step, {_dur(p['epoch_hours'])} per epoch"
        + ("" if p["fits"] else f"  -- DOES NOT FIT in {GPU_CLASSES[p['gpu']][1]} GiB: lower --batch-size"),
    ]
    if p.get("steps"):
        lines.append(f"--steps {p['steps']:,}: {p['epochs']:.3g} epochs, {_dur(p['total_hours'])} on {p['gpus']} x "
                     f"{p['gpu']}")
    if p["cpu_seconds_per_sample"]:
        lines.append(f"data loading: {p['cpu_seconds_per_sample'] * 1000:.0f} ms CPU per sample measured here -> "
                     f"--workers {p['workers_per_gpu']} per GPU keeps up with {p['gpu']}")
    lines.append("GPU class        peak TFLOP/s  memory  fits  s/step    epoch")
    for r in p["gpu_table"]:
        mark = "*" if r["gpu"] == p["gpu"] else " "
        lines.append(f"{mark}{r['gpu']:<16}{r['peak_tflops']:>8.0f}  {r['memory_gib']:>6.0f}  "
                     f"{'yes' if r['fits'] else 'no':>4}  {r['step_s']:>6.3g}  {_dur(r['epoch_h']):>9}")
    lines.append(f"assumptions: {p['mfu']:.0%} MFU (--mfu), vendor dense peaks, no time for validation/checkpoints/"
                 f"all-reduce; see wav2lip384/train/plan.py")
    return "\n".join(lines)


def write_plan(p: dict[str, Any], out: str | Path) -> Path:
    import json

    path = Path(out)
    path.write_text(json.dumps(p, indent=1), encoding="utf-8")
    return path
