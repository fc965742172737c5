"""SyncNet (lip-sync expert) training as a task for the shared loop.

Paper §2.1.1: 5 consecutive frames (their lower halves, stacked on channels) and the mel window of the same
0.2 s form a positive (label 1); audio that does not correspond forms a negative (label 0): as in the original
``color_syncnet_train.py``, faces from any other position of the same clip (near misses of 1-4 frames
included; see ``data.py``'s notes). The face and
audio encoders give unit 512-d vectors; their cosine similarity p (Eq. 1) is trained with binary cross-entropy
against the label (Eq. 2). Validation reports the same loss and the accuracy of ``p > 0.5`` on a fixed
sample set from the validation clips (other source videos than training).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from wav2lip384.models.syncnet import SyncNet
from wav2lip384.train.data import SyncPairs, SyncSampling

CHANCE_BCE = 0.6931471805599453  # ln 2: the loss of always answering p = 0.5


@dataclass(frozen=True)
class SyncNetTrainConfig:
    data: str
    size: int = 96  # 96 | 384 (must match the preprocessed data)
    lr: float = 1e-4  # the original color_syncnet_train's Adam learning rate
    sampling: SyncSampling = field(default_factory=SyncSampling)
    cache_mb: float = 256.0  # decoded frames/mels cached per process (data.ClipStore); 0 = none
    model: dict[str, Any] | None = None  # SyncNetConfig.to_dict() override (tiny runs); None: for_size(size)

    def model_config(self):
        from wav2lip384.models.config import SyncNetConfig

        return SyncNetConfig.from_dict(self.model) if self.model else SyncNetConfig.for_size(self.size)


def sync_loss(syncnet, mel: torch.Tensor, faces: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1-2: BCE between cos(audio_emb, face_emb) and the label. Returns (loss, p (B,)).

    The BCE is computed in float32 outside autocast (``binary_cross_entropy`` is not autocast-safe).
    """
    a, v = syncnet(mel, faces)  # (B, 512) each, unit norm
    with torch.autocast(device_type=a.device.type, enabled=False):
        p = SyncNet.sync_probability(a.float(), v.float())  # (B,) in [0, 1]
        loss = F.binary_cross_entropy(p, label.float())
    return loss, p


class SyncNetTask:
    name = "syncnet"

    def __init__(self, cfg: SyncNetTrainConfig, seed: int = 0):
        self.cfg, self.seed = cfg, seed
        self._train = self._val = None

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.cfg) | {"data": str(Path(self.cfg.data).resolve())}

    def build_models(self, device):
        from wav2lip384.models import SyncNet

        return {"syncnet": SyncNet(self.cfg.model_config()).to(device)}

    def build_optimizers(self, models):
        params = [p for p in models["syncnet"].parameters() if p.requires_grad]
        return {"syncnet": torch.optim.Adam(params, lr=self.cfg.lr)}

    def train_dataset(self):
        if self._train is None:
            self._train = SyncPairs(self.cfg.data, "train", self.cfg.model_config().img_size, self.seed,
                                    self.cfg.sampling, self.cfg.cache_mb)
        return self._train

    def val_dataset(self):
        if self._val is None:  # no validation clips: UserFacingError saying what to do (the loop refuses to start)
            self._val = SyncPairs(self.cfg.data, "val", self.cfg.model_config().img_size, self.seed,
                                  self.cfg.sampling, self.cfg.cache_mb)
        return self._val

    def losses(self, models, batch, step):
        def closure():
            loss, p = sync_loss(models["syncnet"], batch["mel"], batch["faces"], batch["label"])
            acc = ((p > 0.5).float() == batch["label"]).float().mean()
            return loss, {"loss": loss.item(), "acc": acc.item()}

        yield "syncnet", closure

    def validate(self, models, batches, step) -> dict[str, float]:
        n, tot_loss, tot_acc = 0, 0.0, 0.0
        for b in batches:
            loss, p = sync_loss(models["syncnet"], b["mel"], b["faces"], b["label"])
            k = len(b["label"])
            tot_loss += loss.item() * k
            tot_acc += ((p > 0.5).float() == b["label"]).float().sum().item()
            n += k
        return {"loss": tot_loss / n, "acc": tot_acc / n, "chance_loss": CHANCE_BCE}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state) -> None:
        pass

    def export(self, models, out_dir: Path, summary: dict[str, Any]) -> Path | None:
        from wav2lip384.train.export import export_model

        return export_model(models["syncnet"], out_dir, task=self.name, data=self.cfg.data, summary=summary)
