"""Re-create the example files in this folder (see README.md here for what each one is and its licence).

    python -m examples.make_examples

The avatar is NASA's public-domain portrait of astronaut Eileen Collins as shipped by scikit-image
(``skimage.data.astronaut()``, 512×512): the full-resolution photo as a high-quality JPEG, a close-up of
the head upscaled so the face is ~384 px wide, and a short video avatar this script makes from the photo (gentle head motion, see
:func:`head_motion`). The speech is synthesised by this project's own TTS (``tts.TTS``, offline espeak-ng
unless a better engine is configured), stored as small Ogg Vorbis.

Everything except the speech is deterministic: the same libraries give byte-identical images and the same
frames (the H.264 bitstream may differ between ffmpeg builds).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SPEECH = {
    "speech_en.ogg": ("Hello, I am the public service assistant. How can I help you today?", "en"),
    "speech_zh.ogg": ("您好，我是政务服务数字人，很高兴为您服务。", "zh"),
}
PHOTO = "astronaut_512.jpg"  # the full 512×512 source photo
PHOTO_JPEG_QUALITY = 95
VIDEO = "astronaut_motion.mp4"  # a video avatar made from PHOTO
VIDEO_FPS = 25
VIDEO_SECONDS = 8.0
VIDEO_CRF = 25  # H.264 quality (face PSNR ~35 dB vs the frames made here) at ~145 kB, within the folder budget
CLOSEUP = "astronaut_closeup.jpg"  # the face at ~384 px, so a 384 model's mouth is seen at its own resolution
CLOSEUP_BOX = (140, 20, 320, 200)  # x1, y1, x2, y2 of the source: the head (face box ~94 px wide) with margin
CLOSEUP_SIDE = 736  # 180 px -> 736 px: ~4.1x, the face becomes ~385 px wide


def source_photo() -> np.ndarray:
    """(512, 512, 3) RGB uint8: NASA's portrait of Eileen Collins as shipped by scikit-image (public domain)."""
    from skimage import data

    return data.astronaut()


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, :, ::-1])


def make_closeup(out: Path = HERE / CLOSEUP, side: int = CLOSEUP_SIDE, quality: int = PHOTO_JPEG_QUALITY) -> Path:
    """The head cropped from the source and upscaled (Lanczos) so the face is ~384 px wide.

    Why: pasted back into a 94-px face, a 384x384 mouth is shrunk to 94 px and its detail is lost; at this size
    the lip-synced mouth is shown at the model's own resolution. The rest of the face is only as sharp as the
    512-px source allows (an upscale adds no detail) - said in examples/README.md.
    """
    import cv2

    x1, y1, x2, y2 = CLOSEUP_BOX
    crop = source_photo()[y1:y2, x1:x2]  # (180, 180, 3)
    big = cv2.resize(crop, (side, side), interpolation=cv2.INTER_LANCZOS4)  # (side, side, 3)
    cv2.imwrite(str(out), _bgr(big), [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    return out


def make_photo(out: Path = HERE / PHOTO, quality: int = PHOTO_JPEG_QUALITY) -> Path:
    """The full 512×512 photo, no crop and no resampling, as an optimised baseline JPEG (~95 KB vs ~445 KB PNG)."""
    import cv2

    cv2.imwrite(str(out), _bgr(source_photo()),
                [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    return out


# ------------------------------------------------------------------------------------------ video avatar
@dataclass(frozen=True)
class Pose:
    """The head's pose in one frame, relative to the photo (all zero / one = the photo itself)."""

    roll_deg: float  # tilt towards a shoulder, about a pivot at the neck
    dx: float  # pixels, sideways sway
    dy: float  # pixels, small nod
    scale: float  # leaning towards / away from the camera
    zoom: float  # the whole frame, about the face centre (a slow camera "breath"), >= 1


def head_motion(t: float, period: float) -> Pose:
    """A slow, small, periodic pose at time ``t`` seconds.

    Every term is a whole number of cycles per ``period``, so the pose at ``t = period`` equals the pose at
    0 and the clip loops without a jump (the app also plays video avatars forwards then backwards). Two
    harmonics with different phases keep it from looking like a metronome. Amplitudes are what a person
    sitting still does while listening: ~2° of tilt, a few pixels of sway.
    """
    p = 2.0 * math.pi * t / period
    return Pose(roll_deg=1.6 * math.sin(p) + 0.5 * math.sin(2 * p + 0.7),
                dx=2.5 * math.sin(p + 1.3),
                dy=1.5 * math.sin(2 * p),
                scale=1.0 + 0.012 * math.sin(p + 2.1),
                zoom=1.0 + 0.015 * (1.0 - math.cos(p)) / 2.0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class HeadAnimator:
    """Moves the head of a still portrait and leaves shoulders and background where they are.

    The head (an ellipse around the detected face, hair included) moves rigidly — a similarity transform
    about a pivot at the neck — and the displacement fades smoothly to zero outside it, so nothing tears.
    One ``cv2.remap`` per frame does this together with the frame zoom. Hand-written because no library
    we ship animates a still photo; for ~2° the stretch in the fade-out band is invisible.
    """

    def __init__(self, photo: np.ndarray, face_box: tuple[float, float, float, float]):
        h, w = photo.shape[:2]
        x1, y1, x2, y2 = face_box
        fw, fh = x2 - x1, y2 - y1
        self.photo = photo
        self.centre = ((x1 + x2) / 2.0, (y1 + y2) / 2.0)
        self.pivot = (self.centre[0], y2 + 0.35 * fh)  # at the neck, below the chin
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)  # (H, W) each: output pixel coordinates
        self.xs, self.ys = xs, ys
        self.rx, self.ry = 0.9 * fw, 1.05 * fh  # the head ellipse: face plus hair
        self.centre_head = (self.centre[0], self.centre[1] - 0.1 * fh)

    def _weight(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(H, W) float32: 1 on the head, easing to 0 between 1x and 2x the head ellipse."""
        cx, cy = self.centre_head
        r = np.sqrt(((x - cx) / self.rx) ** 2 + ((y - cy) / self.ry) ** 2)
        return (1.0 - _smoothstep(r - 1.0)).astype(np.float32)

    def frame(self, pose: Pose) -> np.ndarray:
        import cv2

        cx, cy = self.centre
        # the frame zoom: output pixel -> photo pixel, about the face centre (zoom >= 1 never leaves the photo)
        gx = cx + (self.xs - cx) / pose.zoom
        gy = cy + (self.ys - cy) / pose.zoom
        # the head's inverse similarity: q = P + s R (p - P) + d  =>  p = P + R^T (q - P - d) / s
        px, py = self.pivot
        a = math.radians(pose.roll_deg)
        ca, sa = math.cos(a), math.sin(a)
        qx, qy = gx - px - pose.dx, gy - py - pose.dy
        hx = px + (ca * qx + sa * qy) / pose.scale
        hy = py + (-sa * qx + ca * qy) / pose.scale
        wgt = self._weight(gx, gy)
        map_x = (gx + wgt * (hx - gx)).astype(np.float32)
        map_y = (gy + wgt * (hy - gy)).astype(np.float32)
        return cv2.remap(self.photo, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)


def detect_face(frame: np.ndarray) -> tuple[float, float, float, float]:
    """The largest face's (x1, y1, x2, y2) by the offline detector (OpenCV Haar, deterministic)."""
    from wav2lip384.faces import HaarDetector, detect_faces

    box = detect_faces(HaarDetector(), [frame]).boxes[0]
    if np.isnan(box[0]):
        raise RuntimeError("no face found in the example photo")
    return tuple(float(v) for v in box)


def motion_frames(photo: np.ndarray, seconds: float = VIDEO_SECONDS, fps: int = VIDEO_FPS) -> Iterator[np.ndarray]:
    """(H, W, 3) RGB uint8 frames of the head motion; frame ``n`` would equal frame 0 (seamless loop)."""
    anim = HeadAnimator(photo, detect_face(photo))
    n = int(round(seconds * fps))
    for i in range(n):
        yield anim.frame(head_motion(i / fps, n / fps))


def make_video(out: Path = HERE / VIDEO, seconds: float = VIDEO_SECONDS, fps: int = VIDEO_FPS,
               crf: int = VIDEO_CRF) -> Path:
    """H.264 (yuv420p, no audio) through the imageio-ffmpeg binary, frames piped in (wav2lip384.media.video)."""
    from wav2lip384.media.video import VideoWriter

    photo = source_photo()
    h, w = photo.shape[:2]
    with VideoWriter(out, w, h, fps, crf=crf, preset="veryslow", threads=1) as vw:
        for frame in motion_frames(photo, seconds, fps):
            vw.write(frame)
    return out


def check_video(path: Path = HERE / VIDEO) -> tuple[float, float]:
    """Decode the video and find the face in every frame with the offline detector; (min, max) box width.

    Raises if any frame has no face or more than one (the app would refuse such an avatar).
    """
    from wav2lip384.faces import HaarDetector, detect_faces
    from wav2lip384.media.video import open_video

    det = detect_faces(HaarDetector(), list(open_video(path).frames))
    if det.missing or det.multi_face_frames:
        raise RuntimeError(f"{path.name}: no face in frames {det.missing}, several in {det.multi_face_frames}")
    widths = det.boxes[:, 2] - det.boxes[:, 0]
    return float(widths.min()), float(widths.max())


def make_speech(engine: str = "auto") -> list[Path]:
    import soundfile as sf

    from tts import TTS

    t = TTS(engine=engine)
    out = []
    for name, (text, lang) in SPEECH.items():
        sp = t.synthesize(text, lang=lang)
        path = HERE / name
        sf.write(path, sp.wave, sp.sample_rate, format="OGG", subtype="VORBIS")
        out.append(path)
        print(f"{name}: {sp.duration_s:.1f} s by {sp.engine}")
    return out


def main() -> None:
    for path in (make_photo(), make_closeup(), make_video()):
        print(f"{path.name}: {path.stat().st_size / 1000:.0f} kB")
    print(f"{PHOTO}: face box (x1, y1, x2, y2) {detect_face(source_photo())}")
    from wav2lip384.media.video import read_image

    print(f"{CLOSEUP}: face box (x1, y1, x2, y2) {detect_face(read_image(HERE / CLOSEUP))}")
    lo, hi = check_video()
    print(f"{VIDEO}: a face in every frame, {lo:.0f}-{hi:.0f} px wide")
    make_speech()


if __name__ == "__main__":
    main()
