"""Avatar preparation: ping-pong looping, content-hash cache on disk and in memory, no-face errors."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserFacingError
from wav2lip384 import faces as F
from wav2lip384.media.video import VideoWriter
from wav2lip384.render.avatars import AvatarCache, pingpong_index


class CountingDetector(F.FaceDetector):
    """A fixed box in the middle of every frame, except frames whose mean is ~0 (black = no face)."""

    name = "fake"

    def __init__(self):
        self.frames_seen = 0

    def detect_batch(self, frames):
        self.frames_seen += len(frames)
        out = []
        for f in frames:
            h, w = f.shape[:2]
            found = f.mean() > 5
            out.append(np.array([[w * 0.25, h * 0.2, w * 0.75, h * 0.8, 1.0]], np.float32) if found
                       else np.zeros((0, 5), np.float32))
        return out


def make_video(path, n, h=64, w=64, fps=25, black=()):
    with VideoWriter(path, w, h, fps) as wr:
        for i in range(n):
            f = np.full((h, w, 3), 0 if i in black else 60 + (3 * i) % 190, np.uint8)
            wr.write(f)
    return path


def test_pingpong_plays_forwards_then_backwards():
    assert [pingpong_index(t, 4) for t in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [pingpong_index(t, 1) for t in range(3)] == [0, 0, 0]


def test_second_request_skips_detection_memory_and_disk(tmp_path):
    video = make_video(tmp_path / "a.mp4", 12)
    det = CountingDetector()
    cache = AvatarCache(tmp_path / "cache")
    av = cache.get(video, frames_needed=12)
    assert av.kind == "video" and av.fps == 25.0 and av.n_frames == 12 and av.complete
    d = av.detect(det)
    seen = det.frames_seen  # keyframes and their regions (the tracker does not look at every frame)
    assert 0 < seen and d.missing == [] and d.mode == "track"
    crops = av.crops(det.name, 96)
    assert crops.crops.shape == (12, 96, 96, 3) and crops.boxes.shape == (12, 4)

    again = cache.get(video, frames_needed=12)  # same content: same object, no decode
    assert again is av and cache.stats["hits"] == 1
    again.detect(det)
    assert det.frames_seen == seen and again.last_detected == 0

    # a fresh process (new in-memory cache) with the same cache dir: detections come from disk
    fresh = AvatarCache(tmp_path / "cache")
    copy = tmp_path / "renamed.mp4"
    copy.write_bytes(video.read_bytes())  # keyed by content, not by name
    av2 = fresh.get(copy, frames_needed=12)
    np.testing.assert_array_equal(av2.detect(det).boxes, d.boxes)
    assert det.frames_seen == seen and av2.last_detected == 0
    assert list((tmp_path / "cache" / "avatars").iterdir())[0].name == av.key


def test_memory_cache_is_bounded(tmp_path):
    cache = AvatarCache(None, max_items=2)
    for i in range(3):
        make_video(tmp_path / f"v{i}.mp4", 3 + i)
        cache.get(tmp_path / f"v{i}.mp4", frames_needed=2)
    assert len(cache) == 2


def test_only_needed_frames_are_decoded_and_detected_then_extended(tmp_path):
    video = make_video(tmp_path / "long.mp4", 150)
    det = CountingDetector()
    cache = AvatarCache(tmp_path / "c")
    av = cache.get(video, frames_needed=10)
    assert 10 <= av.n_frames < 150 and not av.complete
    assert len(av.detect(det, upto=10).boxes) == 10 and av.last_detected == 10
    av = cache.get(video, frames_needed=400)  # longer audio: the whole video, then ping-pong
    assert av.n_frames == 150 and av.complete
    d = av.detect(det)
    assert av.last_detected == 140 and len(d.boxes) == 150 and d.missing == []  # the first 10 were kept
    # per-frame largest face (no tracking) is still there for callers that want it, cached apart
    seen = det.frames_seen
    assert av.detect(det, track=False).mode == "largest" and det.frames_seen == seen + 150


def test_frame_cap_truncates_long_videos(tmp_path):
    video = make_video(tmp_path / "v.mp4", 30)
    cache = AvatarCache(None, max_avatar_seconds=0.4)  # 10 frames at 25 fps
    av = cache.get(video, frames_needed=100)
    assert av.n_frames == 10 and av.truncated and av.complete


def test_no_face_error_names_the_frame(tmp_path):
    video = make_video(tmp_path / "v.mp4", 8, black={5})
    cache = AvatarCache(None)
    av = cache.get(video, frames_needed=8)
    d = av.detect(CountingDetector())
    with pytest.raises(UserFacingError, match=r"frame 5 \(at 0\.20 s\)"):
        av.check_faces(d, 8)
    assert av.check_faces(d, 8, on_no_face="passthrough") == [5]
    assert av.check_faces(d, 5) == []  # frame 5 not used by a short request


def test_image_avatar_and_unreadable_files(tmp_path):
    import cv2

    img = np.full((50, 40, 3), 90, np.uint8)
    cv2.imwrite(str(tmp_path / "p.png"), img)
    av = AvatarCache(None).get(tmp_path / "p.png")
    assert av.kind == "image" and av.frames.shape == (1, 50, 40, 3) and av.source_index(17) == 0
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((50, 40, 3), np.uint8))
    av = AvatarCache(None).get(black)
    with pytest.raises(UserFacingError, match="No face was found in the image black.png"):
        av.check_faces(av.detect(CountingDetector()), 1)
    (tmp_path / "fake.mp4").write_text("not a video")
    with pytest.raises(UserFacingError, match="not a valid MP4"):
        AvatarCache(None).get(tmp_path / "fake.mp4")


def test_large_avatars_are_scaled_down(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "big.png"), np.full((300, 200, 3), 90, np.uint8))
    av = AvatarCache(None, max_side=150).get(tmp_path / "big.png")
    assert (av.width, av.height) == (100, 150) and av.source_size == (200, 300)
    video = make_video(tmp_path / "big.mp4", 4, h=96, w=160)
    av = AvatarCache(None, max_side=80).get(video, frames_needed=4)
    assert (av.width, av.height) == (80, 48) and av.frames.shape[1:3] == (48, 80) and av.source_size == (160, 96)
    av = AvatarCache(None).get(video, frames_needed=4)
    assert (av.width, av.height) == (160, 96) and av.source_size is None


def test_crops_follow_the_policy_and_are_cached_per_policy(tmp_path):
    import cv2

    video = make_video(tmp_path / "a.mp4", 6, h=80, w=120)
    det = CountingDetector()
    cache = AvatarCache(tmp_path / "cache")
    av = cache.get(video, frames_needed=6)
    av.detect(det)
    square = av.crops(det.name, 48)
    stretch = av.crops(det.name, 48, policy="stretch")
    b = stretch.boxes[0]
    # CountingDetector's box is 60 x 48 (+10 bottom pad, clipped to the frame): not squared, then stretched
    assert (b[2] - b[0], b[3] - b[1]) == (60, 58)
    assert square.boxes[0, 2] - square.boxes[0, 0] == square.boxes[0, 3] - square.boxes[0, 1]
    want = cv2.resize(av.frames[0][b[1]:b[3], b[0]:b[2]], (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(stretch.crops[0], want)
    assert av.crops(det.name, 48, policy="stretch") is stretch  # memory cache keyed by policy too
    assert av.crops(det.name, 48) is square
    assert not list(av.cache_dir.glob("crops_*"))  # crops are cut again rather than stored (cheaper)
    # a fresh process gets the same boxes (detections from disk) and crops
    again = AvatarCache(tmp_path / "cache").get(video, frames_needed=6)
    again.detect(det)
    np.testing.assert_array_equal(again.crops(det.name, 48, policy="stretch").boxes, stretch.boxes)
    with pytest.raises(ValueError, match="crop policy"):
        av.crops(det.name, 48, policy="fit")
