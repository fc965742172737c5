"""The lip-sync models of the app: which ones can run here, and one loaded pipeline per model id.

Model identity is a registry id (``wav2lip384.models.registry``); ``96`` / ``384`` are accepted as aliases. Nothing
here downloads while answering "is it available?" (Status, pickers); weights are fetched when a model is first
used (or by the start-up warm-up), with progress reported through a callback.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import ModelUnavailableError, UserFacingError
from common.settings import Settings
from wav2lip384.models import registry

if TYPE_CHECKING:
    from wav2lip384.weights import FileHashes, Provenance

log = logging.getLogger(__name__)


def how_to_configure(spec: registry.ModelSpec) -> str:
    """What a visitor or operator does to make ``spec`` available, in one sentence."""
    if spec.default_weights:
        repo, _, file = spec.default_weights.partition(":")
        return (f"Needs {file} from the Hugging Face Hub repo {repo} (downloaded on first use when the Hub is "
                f"reachable), or set {spec.env_var} to a local copy.")
    return (f"No public weights exist: train them with `python -m wav2lip384.train generator --size "
            f"{spec.img_size}` and set {spec.env_var} to the exported folder or to your Hub repo.")


class ModelCatalog:
    """Availability and lazily loaded pipelines of every registered lip-sync model (thread-safe)."""

    def __init__(self, settings: Settings, cache_dir: Path, *, gate_clip: tuple[Path, Path] | None = None):
        """``gate_clip``: (photo, speech) of the example the lip-sync check of precision levers renders
        (:mod:`wav2lip384.evaluate.gate`; it runs only for published weights with SyncNet weights at hand)."""
        self.settings = settings
        self.cache_dir = Path(cache_dir)
        self.gate_clip = gate_clip
        self._lock = threading.Lock()  # guards the dicts below; never held while loading anything
        self._detector_lock = threading.Lock()
        self._pipes: dict[str, Any] = {}
        self._load_locks: dict[str, threading.Lock] = {}  # one per model: two first requests load it once
        self._downloads: dict[str, tuple[int, int]] = {}  # model id -> (bytes done, total) while downloading
        self._store = None  # one avatar store shared by every model: an avatar is prepared once
        self._detector = None
        self._file_hashes: FileHashes | None = None  # sha256 of local weight files, each hashed once

    # ---- identity and availability ------------------------------------------------------------------
    @staticmethod
    def spec(model: str | int) -> registry.ModelSpec:
        return registry.get(model)

    def checkpoint(self, model: str | int) -> str:
        return self.spec(model).weights_spec(self.settings)

    def weights(self, model: str | int) -> tuple[bool, str]:
        """(available, message) for ``model`` without downloading anything."""
        spec = self.spec(model)
        ckpt = self.checkpoint(spec.id)
        if not ckpt:
            return False, f"{spec.title} is not configured. {how_to_configure(spec)}"
        try:
            from wav2lip384.weights import generator_status

            st = generator_status(spec.id, ckpt)
            ok, msg = st.available, st.message
        except UserFacingError as err:
            ok, msg = False, str(err)
        except ImportError as err:  # an incomplete checkout: the app still starts and says what is missing
            ok, msg = False, f"the lip-sync package is incomplete ({err})."
        if not ok and spec.env_var not in msg:
            msg = f"{msg} {how_to_configure(spec)}"
        return bool(ok), msg

    @property
    def weights_cache_dir(self) -> Path:
        """Where the weights-only safetensors copies of ``.pth`` files live (the pipeline's default)."""
        return self.cache_dir / "weights"

    def _hashes(self) -> FileHashes:
        with self._lock:
            if self._file_hashes is None:
                from wav2lip384.weights import FileHashes

                self._file_hashes = FileHashes(max_entries=32)
            return self._file_hashes

    def provenance(self, model: str | int) -> Provenance:
        """Which weights ``model`` uses (Hub repo, file, commit and sha256, or a local path and its sha256),
        without downloading; a large local file not hashed yet says its hash comes when it is first loaded."""
        from wav2lip384.weights import Provenance, weights_provenance

        spec = self.spec(model)
        ckpt = self.checkpoint(spec.id)
        if not ckpt:
            return Provenance(spec.id, "none", "", spec.default_weights)
        return weights_provenance(spec.id, ckpt, hashes=self._hashes(), cache_dir=self.weights_cache_dir)

    def _quality_gate(self, model: str, detector):
        """The lip-sync check a faster precision must pass (issue 25: a lever that lowers LSE-C on the example
        clip by more than 0.1 is not chosen); None without an example clip. It decides nothing by itself: it runs
        only when ``auto`` found a faster candidate, the weights are the published ones and SyncNet's are at hand."""
        if self.gate_clip is None:
            return None
        from wav2lip384.evaluate.gate import lse_gate_for

        try:
            published = self.provenance(model).published
        except OSError as err:  # provenance is for the record: without it the check says it did not run
            log.warning("provenance of %s unknown, lip-sync check of precision levers not run: %s", model, err)
            published = False
        face, speech = self.gate_clip
        return lse_gate_for(model, weights_published=published, face=face, speech=speech,
                            syncnet=self.settings.syncnet_checkpoint, detector=detector, device=self.settings.device)

    def _record_hash(self, pipe) -> None:
        """After a load: remember the source's sha256 (known from the load, or hashed now, once per file)."""
        info = getattr(pipe, "load_info", None)
        if info is None:
            return
        source = Path(info.source)
        if source.is_dir():
            from wav2lip384.weights import WEIGHTS_NAME

            source = source / WEIGHTS_NAME
        if not source.is_file():  # a Hub repo in our format: its blob's name already is the hash
            return
        hashes = self._hashes()
        if info.source_sha256:
            hashes.put(source, info.source_sha256)
        elif not hashes.get(source):
            t = time.perf_counter()
            hashes.sha256(source)
            log.info("sha256 of %s (%.0f MB) in %.2f s", source, source.stat().st_size / 2**20,
                     time.perf_counter() - t)

    def available(self) -> list[str]:
        return [m for m in registry.ids() if self.weights(m)[0]]

    def require(self, model: str | int) -> str:
        """The model's id when its weights can be had; else a UserFacingError saying what to do."""
        spec = self.spec(model)
        ok, msg = self.weights(spec.id)
        if not ok:
            raise ModelUnavailableError(f"The {spec.title} model is unavailable: {msg}")
        return spec.id

    # ---- shared parts ---------------------------------------------------------------------------------
    def detector(self):
        """The face detector every pipeline shares (S3FD when its weights resolve, else the offline one)."""
        with self._detector_lock:
            if self._detector is None:
                from wav2lip384.faces import cached_detector

                self._detector = cached_detector(self.settings.s3fd_checkpoint or None, self.settings.device)
            return self._detector

    def avatar_store(self):
        with self._lock:
            if self._store is None:
                from wav2lip384.render.avatars import AvatarStore

                # DH_AVATAR_MEMORY_MB / DH_AVATAR_DISK_MB bound every cached byte (frames, features; disk)
                self._store = AvatarStore.from_settings(self.settings, self.cache_dir)  # -> cache_dir/avatars/
            return self._store

    def loaded(self, model: str | int) -> bool:
        return self.spec(model).id in self._pipes

    def precision(self, model: str | int) -> str:
        """How a loaded model computes (precision and runtime chosen by measurement on this machine and these
        weights, with the measured speed-up and difference from fp32); '' until it is loaded. Never loads."""
        generator = getattr(self._pipes.get(self.spec(model).id), "generator", None)
        if generator is None:
            return ""
        from wav2lip384.render.optimize import describe_precision, precision_status

        return describe_precision(precision_status(generator))

    def download_state(self, model: str | int) -> str:
        """'' or e.g. 'downloading 412 of 2070 MB' while the model's weights are being fetched."""
        done_total = self._downloads.get(self.spec(model).id)
        if not done_total:
            return ""
        done, total = done_total
        return f"downloading {done / 2**20:.0f} of {total / 2**20:.0f} MB" if total else f"downloading {done / 2**20:.0f} MB"

    def pipeline(self, model: str | int, progress=None):
        """The loaded pipeline of ``model`` (loads once). While its weights download, the Status panel shows
        the progress and ``progress(done_bytes, total_bytes)`` is called too. A model that cannot be
        loaded raises :class:`ModelUnavailableError` (the app then still speaks the answer)."""
        model = self.require(model)
        detector, store = self.detector(), self.avatar_store()

        def on_download(done, total=None):
            self._downloads[model] = (int(done), int(total or 0))
            if progress is not None:
                progress(done, total)

        with self._lock:  # held only to look up: loading one model must not block the others or the status
            load_lock = self._load_locks.setdefault(model, threading.Lock())
        with load_lock:
            pipe = self._pipes.get(model)
            if pipe is None:
                from wav2lip384.render.pipeline import LipSyncPipeline

                try:
                    pipe = LipSyncPipeline.from_pretrained(
                        model=model, checkpoint=self.checkpoint(model), detector=detector,
                        device=self.settings.device, cache_dir=self.cache_dir, avatar_cache=store,
                        max_audio_seconds=self.settings.max_audio_seconds, show_progress=False,
                        download_progress=on_download, quality_gate=self._quality_gate(model, detector))
                except ModelUnavailableError:
                    raise
                except UserFacingError as err:  # weights unreadable / not downloadable: the app degrades
                    raise ModelUnavailableError(str(err)) from err
                finally:
                    self._downloads.pop(model, None)
                try:
                    self._record_hash(pipe)
                except OSError as err:  # provenance is for the Status panel: never a reason to fail a render
                    log.warning("could not hash the weights of %s: %s", model, err)
                with self._lock:
                    self._pipes[model] = pipe
            return pipe
