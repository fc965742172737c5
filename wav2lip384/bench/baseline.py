"""A faithful mimic of the ORIGINAL Wav2Lip ``inference.py`` at 96x96, for the speed benchmark only.

It reuses this project's modules (audio/mel, video decoding, face detection, the 96 generator); only the
*strategy* is the original's, step by step:

  original inference.py                                     here
  -------------------------------------------------------   ---------------------------------------------
  read ALL frames of the video into a list first            ``video.open_video`` -> list (BGR, as cv2 gives)
  wav -> mel (same hparams); mel chunks at int(i*80/fps),   ``audio.load_audio`` + ``melspectrogram`` +
    last chunk right-aligned, frames cut to len(chunks)       ``mel_windows(mel, fps)`` (same indices/count)
  --box y1 y2 x1 x2 (fixed box) or S3FD on every frame,     ``box=`` (fixed) or ``faces.detect_faces`` on
    pads (0,10,0,0), mean over the next 5 boxes               every frame + pads + the next-5 mean
  rectangle crop f[y1:y2, x1:x2], NOT square                same (the face is stretched to 96x96)
  per frame: cv2.resize(face, (96, 96)) inside datagen      same, per frame, each batch
  frames used as frames[i % len(frames)] (wrap, no          same
    ping-pong)
  batch of 128 (wav2lip_batch_size); img_masked lower       same; (B, 6, 96, 96) in [0, 1]
    half = 0, concat with the unmasked face, /255
  eager fp32 model(mel, faces) under torch.no_grad, the     same: ``generator(mel, faces)`` (no face-encoder
    full face encoder every frame                             caching, no BN folding, no threads tuning)
  p = cv2.resize(pred, (x2-x1, y2-y1)); f[y1:y2,x1:x2] = p  same hard paste (no feathering)
  cv2.VideoWriter('temp/result.avi', DIVX) frame by frame   same, into a per-request temp dir
  ffmpeg -y -i audio -i result.avi -strict -2 -q:v 1 out    same arguments (list form, no shell=True)

Not mimicked: the original builds the model after the first batch is ready (we time the model build
separately as ``load``), and converts non-wav audio with an extra ffmpeg call (our ``load_audio`` decodes
any format in one call).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BATCH_SIZE = 128  # the original's wav2lip_batch_size
IMG_SIZE = 96
PADS = (0, 10, 0, 0)  # the original's default --pads (top, bottom, left, right)
SMOOTH_T = 5  # get_smoothened_boxes(boxes, T=5): mean of boxes[i : i + T]


def _original_smoothing(boxes: np.ndarray, t: int = SMOOTH_T) -> np.ndarray:
    """The original's ``get_smoothened_boxes``: each box = mean of itself and the next t-1 (a shorter
    window at the end); unlike ``faces.smooth_boxes`` it is forward-looking, so it is reproduced here."""
    out = boxes.copy()
    for i in range(len(boxes)):
        window = boxes[len(boxes) - t:] if i + t > len(boxes) else boxes[i:i + t]
        out[i] = np.mean(window, axis=0)
    return out


def detect_boxes(frames_rgb: Sequence[np.ndarray], detector) -> np.ndarray:
    """The original's ``face_detect``: detector on every frame, pads, next-5 smoothing -> (N, 4) y1,y2,x1,x2."""
    from common.errors import UserFacingError
    from wav2lip384 import faces as F

    det = F.detect_faces(detector, frames_rgb, batch_size=16)  # face_det_batch_size = 16
    if det.missing:
        raise UserFacingError(f"Face not detected in frame {det.missing[0]} (the original stops here too).")
    padded = F.apply_pads(det.boxes, PADS, frames_rgb[0].shape)  # (N, 4) x1, y1, x2, y2
    padded = _original_smoothing(padded)
    return np.stack([padded[:, 1], padded[:, 3], padded[:, 0], padded[:, 2]], axis=1).astype(int)


def run_original_style(face_video: str | os.PathLike, audio_path: str | os.PathLike, out_path: str | os.PathLike,
                       generator, *, box: Sequence[int] | None = None, detector=None,
                       batch_size: int = BATCH_SIZE, tmp_parent: str | None = None) -> dict:
    # size-reason: a faithful re-run of the original Wav2Lip inference script (stage by stage, timed) kept in its order
    #   so the comparison is fair.
    """Run the original strategy; returns {"n_frames", "fps", "timings" (s per stage), "output_path"}.

    ``box`` = (y1, y2, x1, x2) as the original's ``--box``; otherwise ``detector`` runs on every frame.
    ``generator`` is a 96 :class:`~wav2lip384.models.Wav2LipGenerator` (eval fp32).
    """
    import cv2
    import torch

    from wav2lip384.media.audio import load_audio, mel_windows, melspectrogram
    from wav2lip384.media.video import ffmpeg_exe, open_video

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="w2l-original-", dir=tmp_parent))
    try:
        # 1. all frames in memory first (the original: cv2.VideoCapture loop -> full_frames)
        t = time.perf_counter()
        stream = open_video(face_video)
        fps = stream.fps
        full_frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in stream.frames]  # BGR like cv2.read()
        timings["read_frames"] = time.perf_counter() - t
        # 2. mel and chunks
        t = time.perf_counter()
        wav = load_audio(audio_path, sample_rate=16000, max_seconds=None)
        chunks = mel_windows(melspectrogram(wav), fps)  # (N, 80, 16), the original's count
        full_frames = full_frames[:len(chunks)]
        timings["mel"] = time.perf_counter() - t
        # 3. boxes (fixed or detected on every frame)
        t = time.perf_counter()
        if box is not None:
            y1, y2, x1, x2 = (int(v) for v in box)
            coords = [(y1, y2, x1, x2)] * len(full_frames)
        else:
            rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in full_frames]
            coords = [tuple(int(v) for v in c) for c in detect_boxes(rgb, detector)]
        timings["detect"] = time.perf_counter() - t

        h, w = full_frames[0].shape[:2]
        avi = work / "result.avi"
        writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"DIVX"), fps, (w, h))
        t_prep = t_model = t_paste = 0.0
        n = len(chunks)
        with torch.no_grad():
            for b0 in range(0, n, batch_size):
                # 4. datagen: per-frame crop + resize, masking, /255
                t = time.perf_counter()
                idx = [i % len(full_frames) for i in range(b0, min(n, b0 + batch_size))]
                img_batch, frames, cs = [], [], []
                for i in idx:
                    y1, y2, x1, x2 = coords[i]
                    face = cv2.resize(full_frames[i][y1:y2, x1:x2], (IMG_SIZE, IMG_SIZE))
                    img_batch.append(face)
                    frames.append(full_frames[i].copy())
                    cs.append(coords[i])
                img_batch = np.asarray(img_batch)  # (B, 96, 96, 3)
                mel_batch = chunks[b0:b0 + len(idx)][..., None]  # (B, 80, 16, 1)
                img_masked = img_batch.copy()
                img_masked[:, IMG_SIZE // 2:] = 0
                img_batch = np.concatenate((img_masked, img_batch), axis=3) / 255.0  # (B, 96, 96, 6) float64
                faces_t = torch.FloatTensor(np.transpose(img_batch, (0, 3, 1, 2)))  # (B, 6, 96, 96)
                mel_t = torch.FloatTensor(np.transpose(mel_batch, (0, 3, 1, 2)))  # (B, 1, 80, 16)
                t_prep += time.perf_counter() - t
                # 5. the full generator every frame, eager fp32
                t = time.perf_counter()
                pred = generator(mel_t, faces_t)  # (B, 3, 96, 96)
                pred = pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.0  # (B, 96, 96, 3)
                t_model += time.perf_counter() - t
                # 6. hard paste + write to the AVI
                t = time.perf_counter()
                for p, f, (y1, y2, x1, x2) in zip(pred, frames, cs, strict=True):
                    p = cv2.resize(p.astype(np.uint8), (x2 - x1, y2 - y1))
                    f[y1:y2, x1:x2] = p
                    writer.write(f)
                t_paste += time.perf_counter() - t
        t = time.perf_counter()
        writer.release()
        timings["prep"], timings["model"], timings["paste_write_avi"] = t_prep, t_model, t_paste + time.perf_counter() - t
        # 7. mux (and re-encode) with ffmpeg, the original's arguments
        t = time.perf_counter()
        cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(audio_path), "-i", str(avi),
               "-strict", "-2", "-q:v", "1", str(out_path)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        timings["mux"] = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    timings["total"] = time.perf_counter() - t0
    return {"n_frames": n, "fps": n / timings["total"], "timings": {k: round(v, 4) for k, v in timings.items()},
            "output_path": str(out_path), "video_fps": fps}
