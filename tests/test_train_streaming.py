"""Training data streams from disk: memory stays flat as the dataset grows (issue 16).

The measurement runs in a fresh child process (nothing else in it allocates), reading every frame and every
mel of a 4-clip and then a 16-clip dataset of 128 px frames through ``ClipStore``; the resident set size
(VmRSS) is read after each pass. A control pass with an unbounded cache (the old behaviour: every frame kept)
shows the measurement would see the growth.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wav2lip384.train import tiny

ROOT = Path(__file__).resolve().parents[1]
SIZE, N_FRAMES = 128, 100  # 48 kB per decoded frame; 100 frames (4 s) per clip

CHILD = textwrap.dedent("""
    import gc, json, sys
    from wav2lip384.train.data import SyncPairs

    def rss_mb():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0

    def full_pass(data, cache_mb):
        ds = SyncPairs(data, "train", SIZE, cache_mb=cache_mb)
        for k, clip in enumerate(ds.clips):
            ds.store.mel(k)
            for i in range(0, clip.n_frames - 4, 5):
                ds.store.frames(k, i)
        for j in range(64):  # the real access path too
            ds[j]
        gc.collect()
        return ds, rss_mb()

    SIZE = int(sys.argv[1])
    small, big, cache_mb = sys.argv[2], sys.argv[3], float(sys.argv[4])
    ds, after_small = full_pass(small, cache_mb)  # warm-up: imports, librosa, a full cache
    del ds
    ds, after_big = full_pass(big, cache_mb)
    print(json.dumps({"after_small": after_small, "after_big": after_big,
                      "cached_mb": (ds.store.cache.bytes + ds.store.mels.bytes) / 2**20}))
""")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    small = tiny.write_synthetic_clips(root / "small", size=SIZE, n_train=4, n_val=1, n_frames=N_FRAMES)
    big = tiny.write_synthetic_clips(root / "big", size=SIZE, n_train=16, n_val=1, n_frames=N_FRAMES, seed=1)
    return small, big


def _measure(small: Path, big: Path, cache_mb: float) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(SIZE), str(small), str(big), str(cache_mb)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_rss_stays_flat_as_the_dataset_grows(datasets):
    small, big = datasets
    frames_big_mb = 16 * N_FRAMES * SIZE * SIZE * 3 / 2**20  # 75 MB of decoded frames in the big set
    bounded = _measure(small, big, cache_mb=8.0)
    growth = bounded["after_big"] - bounded["after_small"]
    # 4x the clips, 4x the frames: the process does not grow beyond allocator slack (measured: ~0-1 MB)
    assert growth < 8.0, bounded
    assert bounded["cached_mb"] <= 8.0 + 32  # frames within --cache-mb, mels within their 32 MB
    # control: an unbounded cache (every frame kept, the old default) grows with the data, and this
    # measurement sees it
    unbounded = _measure(small, big, cache_mb=1e6)
    assert unbounded["after_big"] - unbounded["after_small"] > 0.6 * frames_big_mb, unbounded
