"""Generator training as a task for the shared loop (paper §2.1.2, original Wav2Lip's schedule).

Inputs per sample (``data.GeneratorWindows``): 5 target frames with the lower half zeroed + 5 reference
frames (6 channels), one mel window per frame; ground truth = the 5 target frames.

Loss (documented choice, following the original ``wav2lip_train.py`` / ``hq_wav2lip_train.py``):

    without GAN:  L = w_sync * L_sync + (1 - w_sync) * L1
    with GAN:     L = w_sync * L_sync + w_disc * L_perc + (1 - w_sync - w_disc) * L1

- ``L1``: mean absolute error between generated and ground-truth frames (Eq. 3).
- ``L_sync``: BCE(cos(audio, face), 1) of the *frozen* pre-trained expert SyncNet on the lower halves of the
  5 generated frames and the window's mel (the expert is never updated; eval mode, no optimizer).
- Schedule: ``w_sync`` starts at ``sync_wt_initial`` (0.0) and is switched to ``sync_wt`` (0.03, the hq
  trainer's value; the plain trainer used 0.01) the first time the expert's mean loss on the generator's
  validation outputs drops below ``sync_enable_below`` (0.75), exactly the original's rule; the switch is
  latched, saved in checkpoints and, under DDP, broadcast from rank 0. Until then L_sync is still computed
  (without gradient) and logged. It can never stay off silently:
  - the schedule is logged at the start and its state (with the loss that decided it) at every evaluation;
  - without validation (``val_samples = 0``, an explicit choice) the same rule reads the expert's mean loss
    on the generated frames of the *training* batches since the last evaluation point, with a warning;
  - ``sync_enable_after`` > 0 forces it on at that step if the rule has not fired, with a warning;
  - if it is still off at the end, the run ends with a warning (logged, in the result and training.json).
- GAN (``gan=True``): Wav2Lip's visual-quality discriminator on lower halves; ``L_perc`` = BCE(D(G), 1) with
  ``w_disc`` = 0.07; the discriminator is updated after the generator on the same batch with
  BCE(D(real), 1) + BCE(D(fake.detach()), 0) (real and fake in one forward pass, which DDP needs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from common.errors import UserFacingError
from wav2lip384.models.syncnet import SyncNet
from wav2lip384.train.data import GeneratorWindows, GenSampling


@dataclass(frozen=True)
class GeneratorTrainConfig:
    data: str
    syncnet: str  # expert: a training checkpoint (.pt), an exported folder, or a Hub repo
    size: int = 96
    lr: float = 1e-4
    disc_lr: float = 1e-4
    gan: bool = False
    sync_wt_initial: float = 0.0
    sync_wt: float = 0.03
    sync_enable_below: float = 0.75
    sync_enable_after: int = 0  # force the sync loss on at this step if the rule has not fired (0 = never)
    disc_wt: float = 0.07
    sampling: GenSampling = field(default_factory=GenSampling)
    cache_mb: float = 256.0  # decoded frames/mels cached per process (data.ClipStore); 0 = none
    model: dict[str, Any] | None = None  # GeneratorConfig.to_dict() override (tiny runs)
    disc_model: dict[str, Any] | None = None  # DiscriminatorConfig.to_dict() override

    def generator_config(self):
        from wav2lip384.models.config import GeneratorConfig

        return GeneratorConfig.from_dict(self.model) if self.model else GeneratorConfig.for_size(self.size)

    def disc_config(self):
        from wav2lip384.models.config import DiscriminatorConfig

        return DiscriminatorConfig.from_dict(self.disc_model) if self.disc_model else DiscriminatorConfig.for_size(
            self.size)


def lower_half_stack(frames: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, S, S) -> (B, 3*T, S/2, S): the expert's input layout (frames stacked on channels)."""
    b, c, t, h, w = frames.shape
    lower = frames[:, :, :, h // 2:]  # (B, 3, T, S/2, S)
    return lower.permute(0, 2, 1, 3, 4).reshape(b, t * c, h - h // 2, w)


def expert_sync_loss(expert, mel: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    a, v = expert(mel, lower_half_stack(generated))
    with torch.autocast(device_type=a.device.type, enabled=False):
        p = SyncNet.sync_probability(a.float(), v.float())
        return F.binary_cross_entropy(p, torch.ones_like(p))


class GeneratorTask:
    name = "generator"

    def __init__(self, cfg: GeneratorTrainConfig, seed: int = 0):
        self.cfg, self.seed = cfg, seed
        self.sync_enabled = False
        self.sync_reason = "not evaluated yet"  # why the switch is in its state (logged, checkpointed)
        self._train = self._val = None

    @property
    def sync_weight(self) -> float:
        return self.cfg.sync_wt if self.sync_enabled else self.cfg.sync_wt_initial

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.cfg) | {"data": str(Path(self.cfg.data).resolve())}

    def build_models(self, device):
        from wav2lip384.models import QualityDiscriminator, Wav2LipGenerator
        from wav2lip384.train.export import load_expert

        expert = load_expert(self.cfg.syncnet, self.cfg.size, device)
        if expert.config.img_size != self.cfg.generator_config().img_size:
            raise UserFacingError(f"the expert SyncNet {self.cfg.syncnet} is for {expert.config.img_size}px faces, "
                                  f"the generator for {self.cfg.generator_config().img_size}px")
        expert.eval()
        for p in expert.parameters():
            p.requires_grad_(False)
        models = {"generator": Wav2LipGenerator(self.cfg.generator_config()).to(device), "expert": expert}
        if self.cfg.gan:
            models["disc"] = QualityDiscriminator(self.cfg.disc_config()).to(device)
        return models

    def build_optimizers(self, models):
        opts = {"generator": torch.optim.Adam(models["generator"].parameters(), lr=self.cfg.lr, betas=(0.5, 0.999))}
        if self.cfg.gan:
            opts["disc"] = torch.optim.Adam(models["disc"].parameters(), lr=self.cfg.disc_lr, betas=(0.5, 0.999))
        return opts

    def _dataset(self, split):
        return GeneratorWindows(self.cfg.data, split, self.cfg.generator_config().img_size, self.seed,
                                self.cfg.sampling, self.cfg.cache_mb)

    def train_dataset(self):
        if self._train is None:
            self._train = self._dataset("train")
        return self._train

    def val_dataset(self):
        if self._val is None:  # no validation clips: UserFacingError saying what to do (the loop refuses to start)
            self._val = self._dataset("val")
        return self._val

    # ------------------------------------------------------------------ the sync-loss schedule
    def describe_schedule(self, has_val: bool) -> str:
        c = self.cfg
        src = ("the expert's loss on generated validation frames" if has_val else
               "the expert's loss on generated frames of the TRAINING batches (no validation: val_samples = 0)")
        forced = f"; forced on at step {c.sync_enable_after}" if c.sync_enable_after > 0 else ""
        state = f"now {self.sync_weight} ({self.sync_reason})"
        return (f"sync-loss weight {c.sync_wt_initial} until {src} < {c.sync_enable_below}, then {c.sync_wt} "
                f"(latched){forced}; {state}")

    def update_schedule(self, step: int, val: dict[str, float] | None, train: dict[str, float]) -> str:
        """The original's switch, evaluated at an evaluation point; returns the state and why, for the log."""
        c = self.cfg
        if self.sync_enabled:
            return f"sync loss on (weight {self.sync_weight}): {self.sync_reason}"
        if val is not None and "sync" in val:
            loss, where = val["sync"], "generated validation frames"
        else:
            loss, where = train.get("sync", float("nan")), "generated training frames (no validation)"
        if loss < c.sync_enable_below:
            self.sync_enabled = True
            self.sync_reason = f"turned on at step {step}: expert loss on {where} {loss:.4f} < {c.sync_enable_below}"
            if val is None:
                self.sync_reason += " [warning: decided on training batches]"
        elif c.sync_enable_after > 0 and step >= c.sync_enable_after:
            self.sync_enabled = True
            self.sync_reason = (f"FORCED on at step {step} (sync_enable_after {c.sync_enable_after}) although the "
                                f"expert loss on {where} is {loss:.4f} >= {c.sync_enable_below} [warning]")
        else:
            self.sync_reason = f"off at step {step}: expert loss on {where} {loss:.4f} >= {c.sync_enable_below}"
        if val is not None:
            val["sync_wt"] = self.sync_weight
        return f"sync loss {'on' if self.sync_enabled else 'off'} (weight {self.sync_weight}): {self.sync_reason}"

    def schedule_warnings(self) -> list[str]:
        if self.sync_enabled:
            return [self.sync_reason] if "warning" in self.sync_reason else []
        return [f"the sync loss never turned on: the generator trained on L1 alone ({self.sync_reason}). Train "
                f"longer, check the expert SyncNet (its validation loss should be well below 0.69), or set "
                f"--sync-enable-after STEP"]

    def losses(self, models, batch, step):
        cfg = self.cfg
        state: dict[str, torch.Tensor] = {}
        w_sync = self.sync_weight

        def gen_closure():
            g = models["generator"](batch["indiv_mels"], batch["x"])  # (B, 3, T, S, S)
            state["g"] = g
            l1 = F.l1_loss(g, batch["gt"])
            if w_sync > 0:
                sync = expert_sync_loss(models["expert"], batch["mel"], g)
            else:  # logged only
                with torch.no_grad():
                    sync = expert_sync_loss(models["expert"], batch["mel"], g.detach())
            logs = {"l1": l1.item(), "sync": sync.item(), "sync_wt": w_sync}
            if cfg.gan:
                d_fake = models["disc"](g)  # (B*T, 1)
                with torch.autocast(device_type=g.device.type, enabled=False):
                    perc = F.binary_cross_entropy(d_fake.float(), torch.ones_like(d_fake, dtype=torch.float32))
                loss = w_sync * sync + cfg.disc_wt * perc + (1 - w_sync - cfg.disc_wt) * l1
                logs["perceptual"] = perc.item()
            else:
                loss = w_sync * sync + (1 - w_sync) * l1
            logs["loss"] = loss.item()
            return loss, logs

        yield "generator", gen_closure
        if cfg.gan:
            def disc_closure():
                real, fake = batch["gt"], state["g"].detach()
                pred = models["disc"](torch.cat([real, fake], dim=0))  # (2*B*T, 1)
                n = pred.shape[0] // 2
                target = torch.cat([torch.ones(n, 1), torch.zeros(n, 1)]).to(pred.device)
                with torch.autocast(device_type=pred.device.type, enabled=False):
                    d_loss = F.binary_cross_entropy(pred.float(), target)
                return d_loss, {"disc": d_loss.item()}

            yield "disc", disc_closure

    def validate(self, models, batches, step) -> dict[str, float]:
        n, l1_sum, sync_sum = 0, 0.0, 0.0
        for b in batches:
            g = models["generator"](b["indiv_mels"], b["x"])
            k = b["x"].shape[0]
            l1_sum += F.l1_loss(g, b["gt"]).item() * k
            sync_sum += expert_sync_loss(models["expert"], b["mel"], g).item() * k
            n += k
        return {"l1": l1_sum / n, "sync": sync_sum / n, "sync_wt": self.sync_weight}  # switch: update_schedule

    def state_dict(self) -> dict[str, Any]:
        return {"sync_enabled": self.sync_enabled, "sync_reason": self.sync_reason}

    def load_state_dict(self, state) -> None:
        self.sync_enabled = bool(state.get("sync_enabled", False))
        self.sync_reason = str(state.get("sync_reason", "restored from a checkpoint"))

    def export(self, models, out_dir: Path, summary: dict[str, Any]) -> Path | None:
        from wav2lip384.train.export import export_model

        summary = summary | {"expert_syncnet": str(self.cfg.syncnet), "gan": self.cfg.gan,
                             "sync_enabled": self.sync_enabled, "sync_reason": self.sync_reason,
                             "mel_frame_offset": self.cfg.sampling.indiv_mel_offset}
        return export_model(models["generator"], out_dir, task=self.name, data=self.cfg.data, summary=summary)
