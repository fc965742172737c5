"""The one training loop shared by the SyncNet and generator trainers.

A *task* (``syncnet.py``, ``generator.py``) says what the models, optimizers, data and losses are; this module
owns everything else: device placement, DDP wrapping, AMP, logging, validation, checkpoints and exact resume.

Exact resume, and why it holds:
- Data: batches are a pure function of ``(seed, step, rank)`` (see :class:`StepBatchSampler` and
  ``data.py``: every sample draws its randomness from ``numpy.random.default_rng((seed, sample_index))``),
  so no sampler/iterator state needs saving and the batch after a resume is the batch an uninterrupted run
  would have drawn.
- Models, optimizers (Adam moments), the AMP scaler, the task's own state (e.g. the generator's latched
  sync-loss weight) and torch's CPU/CUDA RNG states are all in the checkpoint.
- Validation runs under ``torch.no_grad`` in eval mode on a fixed set of samples and restores train mode;
  it consumes no RNG.

DDP: when ``torch.distributed`` is initialised (``torchrun`` + ``wav2lip384.train.__main__``), trainable models
are wrapped in ``DistributedDataParallel``; each rank draws different samples (the rank is part of the sample
index); training logs are averaged over ranks; rank 0 alone validates and writes checkpoints, and the others
wait at a barrier.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from wav2lip384.weights.checkpoints import TRAINING_CHECKPOINT_FORMAT, read_training_checkpoint

CHECKPOINT_FORMAT = TRAINING_CHECKPOINT_FORMAT


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the loop itself (model/data/loss settings live in the task's own config)."""

    out_dir: str
    max_steps: int = 1000
    batch_size: int = 16
    eval_every: int = 100  # validation every N steps (and at the last step); 0 = only at the end
    checkpoint_every: int = 500  # checkpoint every N steps (and always at the last step)
    log_every: int = 10
    val_samples: int = 64  # fixed validation samples evaluated each time
    seed: int = 0
    num_workers: int = 0
    device: str = "cpu"
    amp: bool = True  # mixed precision; only takes effect on CUDA (CPU always runs float32)
    max_minutes: float = 0.0  # wall-clock budget; 0 = none. Stops cleanly with a checkpoint.
    keep_checkpoints: int = 2  # newest step checkpoints kept besides last.pt


class Task(Protocol):
    """What a trainer provides. Everything is built from its frozen config; nothing global."""

    name: str

    def config_dict(self) -> dict[str, Any]: ...

    def build_models(self, device: torch.device) -> dict[str, nn.Module]:
        """All models; trainable ones have an optimizer in :meth:`build_optimizers`."""

    def build_optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]: ...

    def train_dataset(self) -> torch.utils.data.Dataset: ...

    def val_dataset(self) -> torch.utils.data.Dataset | None: ...

    def losses(self, models: dict[str, nn.Module], batch: dict[str, torch.Tensor], step: int
               ) -> Iterator[tuple[str, Callable[[], tuple[torch.Tensor, dict[str, float]]]]]:
        """Yield ``(optimizer_name, closure)`` in update order; each closure returns ``(loss, logs)``.

        Closures are called lazily, one after the other's optimizer step, so a GAN can update the generator
        and then the discriminator on the same batch.
        """

    def validate(self, models: dict[str, nn.Module], batches: Iterable[dict[str, torch.Tensor]], step: int
                 ) -> dict[str, float]: ...

    # Optional (the generator has them): a loss schedule driven by validation, or by the training logs when
    # validation is off. ``update_schedule`` runs on rank 0 at every evaluation point and returns a line to
    # log; ``schedule_warnings`` is asked once at the end (e.g. "the sync loss never turned on").
    # def describe_schedule(self, has_val: bool) -> str: ...
    # def update_schedule(self, step: int, val: dict[str, float] | None, train: dict[str, float]) -> str: ...
    # def schedule_warnings(self) -> list[str]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def export(self, models: dict[str, nn.Module], out_dir: Path, summary: dict[str, Any]) -> Path | None:
        """Save the trained model in the inference format (safetensors + config.json); optional."""


@dataclass
class TrainResult:
    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: Path | None = None
    exported: Path | None = None
    stopped_early: bool = False
    ranks_in_sync: bool | None = None  # DDP only: identical trainable weights on every rank at the end
    warnings: list[str] = field(default_factory=list)  # also logged: things a user must not miss


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for each step from ``start_step`` on, the list of global sample indices of this rank's batch.

    Sample ``(step * world + rank) * batch_size + j``: a pure function of the step, so resuming at step s
    reproduces the uninterrupted run's batches, and ranks never draw the same sample.
    """

    def __init__(self, start_step: int, max_steps: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start_step, self.max_steps = start_step, max_steps
        self.batch_size, self.rank, self.world = batch_size, rank, world

    def __iter__(self):
        for step in range(self.start_step, self.max_steps):
            first = (step * self.world + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack numpy/tensor fields of the samples into batch tensors."""
    out = {}
    for key in items[0]:
        out[key] = torch.stack([torch.as_tensor(it[key]) for it in items])
    return out


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under a DDP wrapper (state dicts are saved without ``module.``)."""
    return model.module if hasattr(model, "module") and isinstance(
        model, torch.nn.parallel.DistributedDataParallel) else model


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch to ``device``; uint8 tensors (images, see ``data.py``) become float32 in [0, 1] there."""
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        out[k] = v.float().div_(255.0) if v.dtype == torch.uint8 else v
    return out


_to_device = to_device


# the ONE reader of training checkpoints (inference converts them with it too)
load_checkpoint = read_training_checkpoint


class Trainer:
    """Runs a :class:`Task` under a :class:`TrainConfig`. ``fit()`` is the whole loop."""

    def __init__(self, task: Task, cfg: TrainConfig, *, log: Callable[[str], None] = print):
        self.task, self.cfg, self._log = task, cfg, log
        self.rank, self.world = _dist()
        device = torch.device(cfg.device)
        if device.type == "cuda" and self.world > 1 and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.use_amp = bool(cfg.amp and device.type == "cuda")
        self.out_dir = Path(cfg.out_dir)
        self.step = 0
        self.history: list[dict[str, Any]] = []

    # ----------------------------------------------------------------- helpers
    def log(self, msg: str) -> None:
        if self.rank == 0:
            self._log(msg)

    def _record(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.rank == 0:
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    def _autocast(self):
        if self.use_amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    # ----------------------------------------------------------------- checkpoints
    def save_checkpoint(self, models, optimizers, scaler) -> Path | None:
        if self.rank != 0:
            return None
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "task": self.task.name,
            "task_config": self.task.config_dict(),
            "train_config": asdict(self.cfg),
            "step": self.step,
            "world_size": self.world,
            "models": {k: unwrap(m).state_dict() for k, m in models.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "scaler": scaler.state_dict(),
            "task_state": self.task.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "history": self.history[-200:],
        }
        ckdir = self.out_dir / "checkpoints"
        ckdir.mkdir(parents=True, exist_ok=True)
        path = ckdir / f"step_{self.step:08d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(ckpt, tmp)
        tmp.replace(path)  # atomic: a crash mid-save never leaves a half checkpoint under the real name
        last = self.out_dir / "last.pt"
        tmp_last = last.with_suffix(".tmp")
        torch.save(ckpt, tmp_last)
        tmp_last.replace(last)
        old = sorted(ckdir.glob("step_*.pt"))[:-self.cfg.keep_checkpoints] if self.cfg.keep_checkpoints > 0 else []
        for p in old:
            p.unlink(missing_ok=True)
        return path

    def _restore(self, path, models, optimizers, scaler) -> None:
        from common.errors import UserFacingError

        ckpt = load_checkpoint(path)
        if ckpt["task"] != self.task.name:
            raise UserFacingError(f"{path} is a {ckpt['task']} checkpoint, not {self.task.name}")
        if ckpt["task_config"] != self.task.config_dict():
            diff = {k: (v, self.task.config_dict().get(k)) for k, v in ckpt["task_config"].items()
                    if self.task.config_dict().get(k) != v}
            self.log(f"warning: resuming with a different task config (checkpoint vs now): {diff}")
        for k, m in models.items():
            unwrap(m).load_state_dict(ckpt["models"][k])
        for k, o in optimizers.items():
            o.load_state_dict(ckpt["optimizers"][k])
        scaler.load_state_dict(ckpt["scaler"])
        self.task.load_state_dict(ckpt["task_state"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if ckpt["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        self.step = int(ckpt["step"])
        self.history = list(ckpt.get("history", []))
        self.log(f"resumed {self.task.name} from {path} at step {self.step}")

    def _broadcast_task_state(self) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        box = [self.task.state_dict() if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        self.task.load_state_dict(box[0])

    def _mean_over_ranks(self, means: dict[str, float]) -> dict[str, float]:
        """Training logs averaged over all DDP ranks (every rank logs at the same steps, so this is safe)."""
        if self.world == 1 or not means:
            return means
        import torch.distributed as dist

        keys = sorted(means)
        t = torch.tensor([means[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, (t / self.world).tolist()))

    def _ranks_in_sync(self, models) -> bool:
        """True when every rank ends with the same trainable weights (DDP kept them in lockstep)."""
        import torch.distributed as dist

        with torch.no_grad():
            vec = torch.cat([p.detach().double().flatten() for k, m in models.items() if self.task_trainable[k]
                             for p in unwrap(m).parameters()])
            lo, hi = vec.clone(), vec.clone()
            dist.all_reduce(lo, op=dist.ReduceOp.MIN)
            dist.all_reduce(hi, op=dist.ReduceOp.MAX)
            return bool(torch.equal(lo, hi))

    # ----------------------------------------------------------------- validation
    def _check_data(self) -> bool:
        """Open the datasets before any model is built; returns whether validation runs.

        Validation is required unless ``val_samples == 0`` says otherwise: a missing validation split raises
        the dataset's UserFacingError (what is missing and what to do), so a run never starts without it
        by accident.
        """
        train = self.task.train_dataset()
        self.log(f"data: train {_describe(train)}")
        if self.cfg.val_samples <= 0:
            msg = "validation is off (val_samples = 0): no held-out loss will be reported"
            self.log(f"warning: {msg}")
            self._warnings.append(msg)
            return False
        val = self.task.val_dataset()
        if val is None:
            from common.errors import UserFacingError

            raise UserFacingError(f"{self.task.name}: no validation data; pass val_samples = 0 to train without it")
        self.log(f"data: validation {_describe(val)}; {self.cfg.val_samples} fixed samples every "
                 f"{self.cfg.eval_every or self.cfg.max_steps} steps")
        return True

    def _val_batches(self) -> list[list[int]]:
        """Sample indices of the fixed validation set, in batches (samples are re-read at each evaluation:
        they are pure functions of their index, and holding 384 px generator batches would cost GBs)."""
        ds = self.task.val_dataset()
        if ds is None or self.cfg.val_samples <= 0:
            return []
        idx = list(range(self.cfg.val_samples))
        bs = self.cfg.batch_size
        return [idx[j:j + bs] for j in range(0, len(idx), bs)]

    def validate(self, models, val_batches) -> dict[str, float]:
        if not val_batches:
            return {}
        ds = self.task.val_dataset()
        for m in models.values():
            m.eval()
        with torch.no_grad(), self._autocast():
            batches = (_to_device(collate([ds[i] for i in b]), self.device) for b in val_batches)
            out = self.task.validate({k: unwrap(m) for k, m in models.items()}, batches, self.step)
        for k, m in models.items():
            m.train(self.task_trainable.get(k, False))
        return out

    # ----------------------------------------------------------------- the loop
    def fit(self, resume: str | Path | None = None) -> TrainResult:
        # size-reason: the training loop itself (resume, epochs, accumulation, AMP, validation, checkpoints, early stop)
        #   reads best as one piece; each step it calls is a method already.
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._warnings: list[str] = []
        has_val = self._check_data()  # refuses to start without validation data (unless val_samples = 0)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        models = self.task.build_models(self.device)
        optimizers = self.task.build_optimizers(models)
        # a model is trainable iff some optimizer owns its parameters
        owned = {id(p) for o in optimizers.values() for g in o.param_groups for p in g["params"]}
        self.task_trainable = {k: any(id(p) in owned for p in m.parameters()) for k, m in models.items()}
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        if resume is not None:
            self._restore(resume, models, optimizers, scaler)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            models = {k: DDP(m, device_ids=ids) if self.task_trainable[k] else m for k, m in models.items()}
        for k, m in models.items():
            m.train(self.task_trainable[k])

        loader = torch.utils.data.DataLoader(
            self.task.train_dataset(), batch_sampler=StepBatchSampler(self.step, cfg.max_steps, cfg.batch_size,
                                                                     self.rank, self.world),
            num_workers=cfg.num_workers, collate_fn=collate, pin_memory=self.device.type == "cuda")
        val_batches = self._val_batches() if self.rank == 0 else []
        result = TrainResult(step=self.step)
        t0 = time.monotonic()
        if self.rank == 0:
            self.log(f"{self.task.name}: training steps {self.step}..{cfg.max_steps} on {self.device} "
                     f"(world {self.world}, amp {self.use_amp}, batch {cfg.batch_size}/rank)")
        scheduled = hasattr(self.task, "update_schedule")
        if scheduled:
            self.log(f"schedule: {self.task.describe_schedule(has_val)}")
        running: dict[str, list[float]] = {}
        since_eval: dict[str, list[float]] = {}  # training logs since the last evaluation point (schedules)
        for batch in loader:
            batch = _to_device(batch, self.device)
            logs: dict[str, float] = {}
            for opt_name, closure in self.task.losses(models, batch, self.step):
                opt = optimizers[opt_name]
                opt.zero_grad(set_to_none=True)
                with self._autocast():
                    loss, part = closure()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{opt_name} loss is {loss.item()} at step {self.step}")
                scaler.scale(loss).backward()
                scaler.step(opt)
                logs.update(part)
            scaler.update()
            self.step += 1
            for k, v in logs.items():
                running.setdefault(k, []).append(float(v))
                since_eval.setdefault(k, []).append(float(v))
            last = self.step >= cfg.max_steps
            out_of_time = cfg.max_minutes > 0 and (time.monotonic() - t0) > cfg.max_minutes * 60
            if cfg.max_minutes > 0 and self.world > 1:  # every rank must stop at the same step (collective)
                import torch.distributed as dist

                flag = torch.tensor([1.0 if out_of_time else 0.0], device=self.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item() > 0)
            stop = last or out_of_time
            if self.step % max(1, cfg.log_every) == 0 or stop:
                row = {"step": self.step, "time_s": round(time.monotonic() - t0, 2), "split": "train",
                       **self._mean_over_ranks({k: sum(v) / len(v) for k, v in running.items()})}
                running = {}
                self._record(row)
                self.log(json.dumps(row))
            if (cfg.eval_every and self.step % cfg.eval_every == 0) or stop:  # an evaluation point
                train_means = self._mean_over_ranks({k: sum(v) / len(v) for k, v in since_eval.items()})
                since_eval = {}
                if self.rank == 0:
                    vrow = None
                    if has_val:
                        vrow = {"step": self.step, "time_s": round(time.monotonic() - t0, 2), "split": "val",
                                **self.validate(models, val_batches)}
                    if scheduled:
                        note = self.task.update_schedule(self.step, vrow, train_means)
                        self.log(f"schedule at step {self.step}: {note}")
                        if vrow is not None:
                            vrow["schedule"] = note
                    if vrow is not None:
                        self._record(vrow)
                        self.log(json.dumps(vrow))
                if scheduled:
                    self._broadcast_task_state()  # the schedule may have changed it (the sync-loss switch)
            if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or stop:
                result.last_checkpoint = self.save_checkpoint(models, optimizers, scaler) or result.last_checkpoint
                _barrier()
            if stop:
                result.stopped_early = out_of_time and not last
                break
        result.step = self.step
        result.history = self.history
        if self.world > 1:
            result.ranks_in_sync = self._ranks_in_sync(models)
            self.log(f"DDP: trainable weights identical on all {self.world} ranks: {result.ranks_in_sync}")
        if scheduled:
            self._warnings += self.task.schedule_warnings()
        result.warnings = list(self._warnings)
        for w in result.warnings:
            self.log(f"warning: {w}")
        if self.rank == 0:
            summary = {"steps": self.step, "history_tail": self.history[-4:], "warnings": result.warnings}
            result.exported = self.task.export({k: unwrap(m) for k, m in models.items()}, self.out_dir / "export",
                                               summary)
        _barrier()
        return result


def _describe(ds) -> str:
    describe = getattr(ds, "describe", None)
    return describe() if describe else f"{len(ds)} samples"


def last_loss(history: list[dict[str, Any]], key: str = "loss", split: str = "train") -> float:
    rows = [r for r in history if r.get("split") == split and key in r]
    return rows[-1][key] if rows else math.nan
