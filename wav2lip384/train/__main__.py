"""``python -m wav2lip384.train syncnet|generator --data DIR --size 96|384 --out DIR [...] [--dry-run]``

The recipe (multi-GPU, the paper's 384 models, Hub upload): ``wav2lip384/train/README.md``.

Multi-process (DDP): ``torchrun --nproc_per_node N -m wav2lip384.train ...``; torchrun's environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) is read here, in the CLI, and nowhere else. Backend: NCCL on
CUDA, gloo on CPU. Prints the final result as JSON; user errors exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from common.cli import user_errors_exit_2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wav2lip384.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", required=True)
    for name in ("syncnet", "generator"):
        s = sub.add_parser(name)
        s.add_argument("--data", help="output folder of `python -m wav2lip384.train.preprocess` (required, except for "
                                       "--dry-run --hours)")
        s.add_argument("--size", type=int, choices=(96, 384), default=96)
        s.add_argument("--out", help="folder for metrics.jsonl, checkpoints/, last.pt, export/ (required to train)")
        s.add_argument("--steps", type=int, default=1000, help="total optimizer steps (default 1000)")
        s.add_argument("--batch-size", type=int, default=16, help="per process")
        s.add_argument("--lr", type=float, default=1e-4)
        s.add_argument("--eval-every", type=int, default=100)
        s.add_argument("--checkpoint-every", type=int, default=500)
        s.add_argument("--log-every", type=int, default=10)
        s.add_argument("--val-samples", type=int, default=64,
                       help="fixed validation samples per evaluation; 0 = no validation (warned; the run otherwise "
                            "refuses to start without validation clips)")
        s.add_argument("--max-minutes", type=float, default=0.0, help="wall-clock budget (0 = none)")
        s.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--device", default=None, help="cpu | cuda (default: DH_DEVICE, else cuda if available)")
        s.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
        s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
        s.add_argument("--resume", default=None, help="a checkpoint (.pt) to continue from, or 'auto' = OUT/last.pt")
        s.add_argument("--cache-mb", type=float, default=256.0,
                       help="decoded frames/mels cached per process (each DataLoader worker has its own; frames "
                            "stream from disk, memory does not grow with the dataset); 0 = no cache")
        s.add_argument("--tiny", action="store_true",
                       help="tiny 32px architectures (smoke runs/tests; data must be preprocessed at --size 32)")
        d = s.add_argument_group("planning (--dry-run: print the cost, train nothing)")
        d.add_argument("--dry-run", action="store_true",
                       help="print the dataset's hours, steps per epoch, memory per GPU and time per epoch")
        d.add_argument("--gpus", type=int, default=None, help="GPUs of the planned run (default: WORLD_SIZE or 1)")
        d.add_argument("--gpu", default=None, help="GPU class for the estimate (default A100-80GB; the output "
                                                     "lists every known class)")
        d.add_argument("--mfu", type=float, default=None, help="assumed utilisation of the GPU's peak (default 0.35)")
        d.add_argument("--hours", type=float, default=None, help="plan for this many hours of training data instead "
                                                                 "of --data's (e.g. 5 = the paper's 300 min)")
        d.add_argument("--plan-json", default=None, help="also write the plan as JSON to this file")
        if name == "generator":
            s.add_argument("--syncnet", help="expert: training checkpoint .pt, export folder or Hub repo "
                                             "(required to train)")
            s.add_argument("--gan", action="store_true", help="add the visual-quality discriminator loss")
            s.add_argument("--sync-wt", type=float, default=0.03)
            s.add_argument("--sync-enable-below", type=float, default=0.75,
                           help="the sync loss turns on when the expert's loss on generated frames drops below")
            s.add_argument("--sync-enable-after", type=int, default=0,
                           help="force the sync loss on at this step if it is still off (0 = never; warns)")
            s.add_argument("--disc-wt", type=float, default=0.07)
    return p


def _init_distributed(device: str) -> int:
    """Initialise torch.distributed when launched by torchrun; returns the local rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return local_rank


def _task(args):
    """The training task (SyncNet or generator) the arguments ask for."""
    size = args.size
    if args.tiny:
        from wav2lip384.train import tiny

        size = tiny.TINY_SIZE
    if args.task == "syncnet":
        from wav2lip384.train.syncnet import SyncNetTask, SyncNetTrainConfig

        tcfg = SyncNetTrainConfig(data=args.data, size=size, lr=args.lr, cache_mb=args.cache_mb,
                                  model=tiny.tiny_syncnet_config().to_dict() if args.tiny else None)
        return SyncNetTask(tcfg, seed=args.seed)
    from wav2lip384.train.generator import GeneratorTask, GeneratorTrainConfig

    tcfg = GeneratorTrainConfig(
        data=args.data, syncnet=args.syncnet, size=size, lr=args.lr, gan=args.gan, sync_wt=args.sync_wt,
        sync_enable_below=args.sync_enable_below, sync_enable_after=args.sync_enable_after,
        disc_wt=args.disc_wt,
        cache_mb=args.cache_mb,
        model=tiny.tiny_generator_config().to_dict() if args.tiny else None,
        disc_model=tiny.tiny_discriminator_config().to_dict() if args.tiny else None)
    return GeneratorTask(tcfg, seed=args.seed)


def _dry_run(args, task) -> int:
    """Print (and optionally write) the compute plan instead of training."""
    from wav2lip384.train import plan as planning

    gpus = args.gpus or int(os.environ.get("WORLD_SIZE", "1"))
    p = planning.make_plan(task, data_dir=args.data, batch_size=args.batch_size, gpus=gpus,
                           gpu=args.gpu or planning.DEFAULT_GPU, mfu=args.mfu or planning.DEFAULT_MFU,
                           amp=not args.no_amp, hours=args.hours, steps=args.steps)
    print(planning.format_plan(p))
    if args.plan_json:
        planning.write_plan(p, args.plan_json)
    return 0


def _train(args, task, device: str) -> int:
    """Train; rank 0 prints the result as JSON."""
    from pathlib import Path

    from common.errors import UserFacingError
    from wav2lip384.train.loop import TrainConfig, Trainer

    if not args.out:
        raise UserFacingError("--out is required to train (a folder for checkpoints and metrics)")
    cfg = TrainConfig(out_dir=args.out, max_steps=args.steps, batch_size=args.batch_size,
                      eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                      log_every=args.log_every, val_samples=args.val_samples, seed=args.seed,
                      num_workers=args.workers, device=device, amp=not args.no_amp,
                      max_minutes=args.max_minutes)
    resume = args.resume
    if resume == "auto":
        resume = str(Path(args.out) / "last.pt") if (Path(args.out) / "last.pt").is_file() else None
    trainer = Trainer(task, cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    result = trainer.fit(resume=resume)
    if trainer.rank == 0:
        val = [r for r in result.history if r.get("split") == "val"]
        print(json.dumps({"task": args.task, "step": result.step, "stopped_early": result.stopped_early,
                          "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
                          "exported": str(result.exported) if result.exported else None,
                          "world_size": trainer.world, "ranks_in_sync": result.ranks_in_sync,
                          "train_config": asdict(cfg),
                          "last_val": val[-1] if val else None, "warnings": result.warnings}, indent=1))
    return 0


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    from common.errors import UserFacingError
    from common.settings import Settings

    args = build_parser().parse_args(argv)
    if not args.data and not (args.dry_run and args.hours):
        raise UserFacingError("--data is required (the output folder of `python -m wav2lip384.train.preprocess`); "
                              "only --dry-run --hours H plans without data")
    if args.task == "generator" and not args.syncnet and not args.dry_run:
        raise UserFacingError("--syncnet is required: the expert SyncNet trained first "
                              "(`python -m wav2lip384.train syncnet ...`), as a .pt, export folder or Hub repo")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or Settings.from_env().device
    if args.device is None and device == "cpu" and torch.cuda.is_available():
        device = "cuda"
    try:
        local_rank = _init_distributed(device)
        if device == "cuda":
            device = f"cuda:{local_rank}"
        task = _task(args)
        return _dry_run(args, task) if args.dry_run else _train(args, task, device)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
