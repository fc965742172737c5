"""AvatarStore: per-avatar locks (one decode, one detection for concurrent first requests), one memory budget
for frames + crops + encoder features with LRU eviction, a disk budget with an LRU sweep, atomic cache files."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from wav2lip384 import faces as F
from wav2lip384.media.video import VideoWriter
from wav2lip384.render.avatars import AvatarCache, AvatarStore, FeatureKey, atomic_write

H = W = 64


class SlowDetector(F.FaceDetector):
    """A centred box in every frame; slow enough that concurrent requests overlap."""

    name = "slow"

    def __init__(self, delay: float = 0.01):
        self.delay = delay
        self.images = 0
        self._lock = threading.Lock()

    def detect_batch(self, frames):
        time.sleep(self.delay)
        with self._lock:
            self.images += len(frames)
        out = []
        for f in frames:
            h, w = f.shape[:2]
            out.append(np.array([[w * 0.25, h * 0.2, w * 0.75, h * 0.8, 1.0]], np.float32))
        return out


def make_video(path, n=10, level=60):
    with VideoWriter(path, W, H, 25) as wr:
        for i in range(n):
            wr.write(np.full((H, W, 3), (level + 3 * i) % 250, np.uint8))
    return path


def temp_files(root):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_concurrent_first_requests_decode_and_detect_once(tmp_path):
    video = make_video(tmp_path / "a.mp4", n=20)
    copies = [video] + [tmp_path / f"copy{i}.mp4" for i in range(3)]
    for c in copies[1:]:
        c.write_bytes(video.read_bytes())  # same content, other names: one avatar
    once = SlowDetector(0.0)
    AvatarStore(None).get(video, frames_needed=20).detect(once)  # what one request costs

    store = AvatarStore(tmp_path / "cache")
    det = SlowDetector()
    barrier = threading.Barrier(8)
    got, errors = [], []

    def request(path):
        try:
            barrier.wait()
            av = store.get(path, frames_needed=20)
            d = av.detect(det)
            av.crops(det.name, 32)
            got.append((av, d))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=request, args=(copies[i % 4],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({id(av) for av, _ in got}) == 1 and len(store) == 1
    assert store.stats["decodes"] == 1
    assert det.images == once.images  # the detector ran once, not eight times
    assert len({id(d) for _, d in got}) == 1
    assert not temp_files(tmp_path / "cache")


def test_two_stores_on_one_folder_write_without_clashing(tmp_path):
    # two processes sharing a cache folder (simulated by two stores): unique temporary names, atomic renames
    video = make_video(tmp_path / "a.mp4", n=12)
    stores = [AvatarStore(tmp_path / "cache") for _ in range(4)]
    errors = []

    def run(store):
        try:
            store.get(video, frames_needed=12).detect(SlowDetector(0.002))
        except Exception as err:  # pragma: no cover
            errors.append(err)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not temp_files(tmp_path / "cache")
    fresh = AvatarStore(tmp_path / "cache").get(video, frames_needed=12)
    det = SlowDetector(0.0)
    assert len(fresh.detect(det).boxes) == 12 and det.images == 0  # read back from disk, intact


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_memory_budget_counts_frames_crops_and_features_and_evicts_lru(tmp_path):
    import torch

    one = 10 * H * W * 3 + 10 * 32 * 32 * 3 + 2048 + 160  # frames + crops + features + boxes of one avatar
    store = AvatarStore(None, memory_bytes=int(3.5 * one))
    videos = [make_video(tmp_path / f"v{i}.mp4", level=10 + 20 * i) for i in range(8)]
    det = SlowDetector(0.0)
    keys = []
    for i, v in enumerate(videos):
        av = store.get(v, frames_needed=10)
        keys.append(av.key)
        av.detect(det)
        crops = av.crops(det.name, 32)  # + 10 x 32 x 32 x 3
        slot = store.features(av, FeatureKey.of("m", torch.float32, crops.boxes))
        assert slot.put(0, [torch.zeros(64, 8)])  # 2 KB
        assert store.nbytes <= store.memory_bytes
        if i == 2:
            store.get(videos[0], frames_needed=10)  # a is used again: b is now the oldest
    assert store.nbytes <= store.memory_bytes and len(store) == 3
    assert store.keys() == keys[-3:] and store.stats["evicted"] == 5
    # eviction order: least recently used first (a was touched after c was added, so b went before a)
    store2 = AvatarStore(None, memory_bytes=int(3.5 * 10 * H * W * 3))  # 3 avatars' frames
    a, b, c = (store2.get(v, frames_needed=10).key for v in videos[:3])
    store2.get(videos[0], frames_needed=10)
    d = store2.get(videos[3], frames_needed=10).key
    assert store2.keys() == [c, a, d]


def test_feature_slots_are_typed_bounded_and_replaced_when_boxes_change(tmp_path):
    import torch

    store = AvatarStore(None, memory_bytes=10 * 2**20)
    av = store.get(make_video(tmp_path / "v.mp4"), frames_needed=10)
    base = store.nbytes
    boxes = np.array([[1, 2, 3, 4]], np.int32)
    slot = store.features(av, FeatureKey.of("wav2lip96", torch.float32, boxes), max_bytes=2500)
    assert store.features(av, FeatureKey.of("wav2lip96", torch.float32, boxes)) is slot
    feat = [torch.ones(1, 16, 8), torch.ones(1, 8, 4)]  # 512 + 128 bytes
    assert slot.put(3, feat) and 3 in slot and slot.get(3) is feat and slot.nbytes == 640
    assert store.nbytes == base + 640
    for i in range(4):
        slot.put(10 + i, [torch.ones(1, 16, 8)])  # 512 bytes each: the 4th would pass max_bytes
    assert slot.nbytes == 2176 and len(slot) == 4 and 13 not in slot
    # other boxes (other pads or smoothing): the old features are dropped, not orphaned
    other = store.features(av, FeatureKey.of("wav2lip96", torch.float32, boxes + 1))
    assert other is not slot and len(other) == 0 and store.nbytes == base
    # another model or dtype: a slot of its own
    bf16 = store.features(av, FeatureKey.of("wav2lip96", torch.bfloat16, boxes + 1))
    assert bf16 is not other and set(store.feature_slots(av)) == {other, bf16}
    # a value larger than the whole budget is refused (the caller just does not cache it)
    assert not other.put(0, [torch.zeros(4 * 2**20)])
    # the untyped extras of the old pipeline are counted as well
    av.extras["k"] = {"bytes": 0, "frames": {0: [torch.zeros(256)]}}
    assert store.nbytes == base + 1024


def test_disk_budget_sweeps_least_recently_used_folders(tmp_path):
    videos = [make_video(tmp_path / f"v{i}.mp4", level=10 + 20 * i) for i in range(6)]
    probe = AvatarStore(tmp_path / "probe")
    probe.get(videos[0], frames_needed=10).detect(SlowDetector(0.0))
    per_avatar = probe.disk_usage()
    assert 0 < per_avatar < 20_000  # detections + meta: a few KB, no crops or frames on disk

    store = AvatarStore(tmp_path / "cache", disk_bytes=int(2.5 * per_avatar), memory_bytes=2**30)
    keys = []
    for v in videos:
        av = store.get(v, frames_needed=10)
        av.detect(SlowDetector(0.0))
        av.crops("slow", 48)
        keys.append(av.key)
        assert store.disk_usage() <= store.disk_bytes
        time.sleep(0.02)  # distinct modification times
    kept = sorted(p.name for p in (tmp_path / "cache" / "avatars").iterdir())
    assert kept == sorted(keys[-2:]) and store.stats["swept"] == 4
    assert not temp_files(tmp_path / "cache")


def test_store_from_settings_and_old_name(tmp_path):
    from common.settings import Settings

    s = Settings(cache_dir=str(tmp_path), avatar_memory_mb=12, avatar_disk_mb=3)
    store = AvatarStore.from_settings(s)
    assert store.memory_bytes == 12 * 2**20 and store.disk_bytes == 3 * 2**20
    assert store.cache_dir == tmp_path / "avatars"
    old = AvatarCache(None, max_items=2, max_bytes=1000)
    assert isinstance(old, AvatarStore) and old.max_bytes == 1000 and old.max_items == 2


def test_a_video_that_fails_to_decode_leaves_no_entry(tmp_path):
    from common.errors import UserFacingError

    good = make_video(tmp_path / "good.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(good.read_bytes()[:400])  # a real header, no frames
    store = AvatarStore(tmp_path / "cache")
    with pytest.raises(UserFacingError):
        store.get(broken, frames_needed=5)
    assert len(store) == 0 and not temp_files(tmp_path / "cache")
    assert store.get(good, frames_needed=5).n_frames == 10  # the store keeps serving
