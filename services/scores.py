"""The Compare tab's scores: for each model's video, how well the lips follow the speech and how the mouth looks.

Computed after the videos are shown (the app chains this as a second event), from the finished videos alone
(each carries its speech), with the measures of :mod:`wav2lip384.evaluate`. The videos are made from one avatar,
so its faces are found once, in the first video, and every model's mouth is measured in the same crops:

- **lip-sync distance** (LSE-D, lower is better) and **lip-sync confidence** (LSE-C, higher is better) and the
  **audio-video offset** in frames, by the published protocol (syncnet_python's network and weights, proven
  against its own outputs in ``tests/test_lse_golden.py``): the figures lip-sync papers report;
- **mouth sharpness** (higher is sharper): the project's one sharpness measure, the same figure the line under
  each video gives (:func:`services.media.mouth_clarity`);
- **mouth motion in pauses** (lower is stiller): the mean absolute frame-to-frame change of the mouth region
  while the speech pauses (:func:`wav2lip384.evaluate.pause_motion` defines it).

The lip-sync figures need syncnet_python's weights (``DH_SYNCNET_CHECKPOINT``, by default LatentSync's copy on
the Hub). Without them the other two are still shown and one calm line says why the lip-sync ones are not;
the technical reason goes to the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserFacingError
from common.settings import Settings
from services.media import mouth_clarity
from wav2lip384.models import registry

log = logging.getLogger(__name__)

NO_SYNCNET = "Lip-sync scores are not shown: the model that measures lip sync is not available here."
RETRY_AFTER_S = 60.0  # a failed weights load is not retried for this long (the Hub probe costs seconds)


@dataclass
class ModelScores:
    """One model's figures (None: not measured; ``note`` says why in plain words)."""

    model: str
    title: str
    lse_d: float | None = None
    lse_c: float | None = None
    av_offset: int | None = None
    sharpness: float | None = None
    pause_motion: float | None = None
    pause_seconds: float = 0.0
    short_clip: bool = False
    note: str = ""


@dataclass
class ScoresReport:
    rows: list[ModelScores] = field(default_factory=list)
    syncnet_ok: bool = False
    notice: str = ""  # one calm line when the lip-sync scores are not available
    weights: str = ""  # which SyncNet weights (provenance), for the details
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CompareScores:
    """Scores the Compare tab's videos. One per app; thread-safe; loads the SyncNet weights once, on first use.

    ``detector``: returns the face detector the app already uses (the protocol finds faces with our detector).
    """

    def __init__(self, settings: Settings, detector: Callable[[], Any]):
        self.settings = settings
        self._detector = detector
        self._lock = threading.Lock()
        self._model = None
        self._failed: tuple[str, float] | None = None  # (reason, monotonic time)

    def syncnet(self):
        """The loaded evaluation network, or :class:`UserFacingError` saying why not (retried after a while)."""
        from wav2lip384.evaluate import HOW_TO_GET_SYNCNET, load_syncnet_s

        with self._lock:
            if self._model is not None:
                return self._model
            if self._failed and time.monotonic() - self._failed[1] < RETRY_AFTER_S:
                raise UserFacingError(self._failed[0])
            spec = self.settings.syncnet_checkpoint
            try:
                if not spec:
                    raise UserFacingError("lip-sync scores are turned off (DH_SYNCNET_CHECKPOINT is empty). "
                                          + HOW_TO_GET_SYNCNET)
                self._model = load_syncnet_s(spec, self.settings.device)
            except UserFacingError as err:
                self._failed = (str(err), time.monotonic())
                raise
            return self._model

    def state(self) -> tuple[bool | None, str]:
        """For Status, without loading or downloading: (True, which weights) once loaded, (False, why not) after a
        failed load or when turned off, (None, the weights it will load) before the first comparison."""
        with self._lock:
            if self._model is not None:
                prov = getattr(self._model, "provenance", None)
                return True, prov.describe() if prov is not None else str(self.settings.syncnet_checkpoint)
            if not self.settings.syncnet_checkpoint:
                return False, "turned off (DH_SYNCNET_CHECKPOINT is empty)"
            if self._failed:
                return False, self._failed[0]
            spec = str(self.settings.syncnet_checkpoint)
        # a Hub file neither cached nor downloadable now will not load: say so before a comparison tries
        from common.hub import hub_reachable
        from wav2lip384.weights import hub_cached_file

        repo, sep, filename = spec.partition(":")
        if sep and repo.count("/") == 1 and not Path(spec).expanduser().exists() \
                and hub_cached_file(repo, filename) is None and not hub_reachable():
            return False, (f"weights {spec}: not on this server and the Hugging Face Hub is not reachable "
                           "(set DH_SYNCNET_CHECKPOINT to a local syncnet_v2.model)")
        return None, f"weights {spec} (loaded at the first comparison)"

    def score(self, videos: Sequence[tuple[str, str | Path | None]], max_seconds: float | None = None) -> ScoresReport:
        """``videos``: (model id, video path or None) in the order shown; a model without a video gets no row."""
        from wav2lip384.evaluate import video_scores

        t0 = time.perf_counter()
        report = ScoresReport()
        try:
            model = self.syncnet()
            report.syncnet_ok = True
            prov = getattr(model, "provenance", None)
            report.weights = prov.describe() if prov is not None else ""
        except UserFacingError as err:
            model = None
            report.notice = NO_SYNCNET
            log.info("compare scores without lip-sync figures: %s", err)
        detector = self._detector()
        boxes = None  # the videos come from one avatar: faces found in the first are used for all
        for model_id, path in videos:
            if not path:  # the model could not run: its tile above says why, nothing to measure
                continue
            spec = registry.get(model_id)
            row = ModelScores(model=spec.id, title=spec.title)
            report.rows.append(row)
            try:
                res = video_scores(path, syncnet=model, detector=detector, max_seconds=max_seconds,
                                   device=self.settings.device, boxes=boxes)
            except UserFacingError as err:
                log.info("compare scores: %s not measured: %s", spec.id, err)
                row.note = ("no face was found in its video." if "no face" in str(err) else
                            "its video could not be measured.")
                continue
            boxes = res["boxes"] if boxes is None else boxes
            row.short_clip = bool(res["short_clip"])
            row.sharpness = mouth_clarity(path, detector=detector)
            pauses = res["mouth_in_pauses"]
            row.pause_motion, row.pause_seconds = pauses["pause_motion"], float(pauses["pause_seconds"])
            lse = res["lse"]
            if lse is not None and lse.get("available"):
                row.lse_d, row.lse_c, row.av_offset = lse["lse_d"], lse["lse_c"], lse["av_offset_frames"]
            elif lse is not None:
                row.note = "the clip is too short to measure lip sync (it needs at least 6 frames)."
        report.seconds = time.perf_counter() - t0
        return report
