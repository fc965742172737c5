"""Soak: the app's services under concurrent load and a stream of new avatars stay within their budgets.

10 concurrent text -> avatar jobs, then 20 different new video avatars in sequence, all through one
``AppServices`` (random ``wav2lip96`` weights; the offline face detector). Asserts what an operator cares about:
every output is a valid, distinct mp4 with sound; the avatar store's memory and disk stay under the budgets set
in ``Settings``; the process's RSS stays bounded; no temporary file is left behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from common.settings import Settings
from services import DEFAULT_AVATAR, AppServices

pytestmark = pytest.mark.slow

MEMORY_MB, DISK_MB = 60.0, 2.0  # small on purpose: the 20 avatars must force evictions


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _video_avatar(path: Path, k: int) -> Path:
    """A 1.2-s 25-fps clip of the example photo, shifted, scaled and tinted differently for each ``k``."""
    import cv2
    import imageio_ffmpeg

    img = cv2.cvtColor(cv2.imread(str(DEFAULT_AVATAR)), cv2.COLOR_BGR2RGB)  # (512, 512, 3)
    side = 256 + 16 * (k % 5)
    img = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    tint = np.array([(k * 7) % 20, (k * 13) % 20, (k * 3) % 20], np.int16)
    writer = imageio_ffmpeg.write_frames(str(path), (side, side), fps=25, macro_block_size=1, quality=8)
    writer.send(None)
    for t in range(30):
        frame = np.roll(img, (t // 3) + k, axis=1).astype(np.int16) + tint
        writer.send(np.ascontiguousarray(np.clip(frame, 0, 255).astype(np.uint8)))
    writer.close()
    return path


def _mp4_ok(path: Path) -> None:
    from wav2lip384.media.video import probe

    info = probe(path)
    assert path.stat().st_size > 1000 and info.video and info.video[0]["width"] > 0 and info.audio, info


@pytest.fixture(scope="module")
def soak_services(tmp_path_factory):
    import torch

    from wav2lip384.models import Wav2LipGenerator, registry
    from wav2lip384.weights import save_pretrained

    root = tmp_path_factory.mktemp("soak")
    torch.manual_seed(0)
    save_pretrained(Wav2LipGenerator(registry.get("wav2lip96").config()), root / "w96")
    settings = dataclasses.replace(Settings(), cache_dir=str(root / "cache"), tts_engine="espeak",
                                   avatar_memory_mb=MEMORY_MB, avatar_disk_mb=DISK_MB
                                   ).with_weights({"DH_WAV2LIP96_CHECKPOINT": str(root / "w96")})
    svc = AppServices(settings, tmp_parent=root / "requests")
    yield svc, root
    svc.close()


def test_ten_concurrent_jobs_then_twenty_new_avatars_stay_within_budgets(soak_services, tmp_path):
    svc, root = soak_services
    svc.pipeline("wav2lip96")  # loaded once, as the app's warm-up does
    rss0 = _rss_mb()
    texts = [f"Number {k}." + " Yes." * (k % 3) for k in range(10)]
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda t: svc.text_to_avatar(t, DEFAULT_AVATAR, "wav2lip96", lang="en"), texts))
    for r in results:
        _mp4_ok(r.path)
    assert len({hashlib.sha256(r.path.read_bytes()).hexdigest() for r in results}) == 10

    store = svc.models.avatar_store()
    outputs = []
    for k in range(20):
        avatar = _video_avatar(tmp_path / f"avatar_{k:02d}.mp4", k)
        res = svc.text_to_avatar("Hello there.", avatar, "wav2lip96", lang="en")
        _mp4_ok(res.path)
        outputs.append(hashlib.sha256(res.path.read_bytes()).hexdigest())
        assert store.nbytes <= MEMORY_MB * 2**20, f"avatar memory {store.nbytes / 2**20:.1f} MB after avatar {k}"
        assert store.disk_usage() <= DISK_MB * 2**20, f"avatar disk {store.disk_usage() / 2**20:.2f} MB after {k}"
    assert len(set(outputs)) == 20
    growth = _rss_mb() - rss0
    assert growth < 1500, f"RSS grew {growth:.0f} MB"  # bounded: frames and features are evicted, not kept

    svc.dirs.sweep(now=float("inf"))  # what the app does as requests age out
    cache = Path(svc.settings.cache_dir)
    leftovers = [p for p in cache.rglob("*")
                 if p.name.endswith((".tmp", ".part")) or ".tmp-" in p.name or p.name.startswith("lipsync-")]
    assert not leftovers, leftovers  # no half-written cache file, no pipeline work directory
    assert not list(svc.dirs.root.iterdir()), "request directories left behind"
