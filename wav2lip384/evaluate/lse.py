"""Measure lip-sync and visual quality of a video: ``python -m wav2lip384.evaluate --video V [--reference R] --json``.

Measures (each says when it could not be computed and why, never silently):

- **LSE-D / LSE-C** following the syncnet_python protocol (Chung & Zisserman's SyncNet as used by Wav2Lip's
  evaluation): video at 25 fps, face track cropped to 224x224 with syncnet_python's rule (box size/centre
  median-filtered over 13 frames, crop scale 0.4, grey padding 110), BGR pixels 0..255; audio 16 kHz as int16
  values, 13 MFCCs at 100 Hz (``python_speech_features.mfcc`` defaults); 5-frame video windows against
  20-MFCC-frame audio windows; offsets -15..+15 frames; distance = Euclidean between the 1024-d embeddings;
  per offset the mean over windows; LSE-D = the minimum of these means, LSE-C = median - minimum, AV offset =
  15 - argmin. Needs syncnet_python's weights (``syncnet_v2.model``) for :class:`SyncNetS`, supplied by the
  user (``--lse-syncnet`` path or Hub ``owner/name:file``, default DH_SYNCNET_CHECKPOINT).
  Clips shorter than syncnet_python's minimum face track (100 frames = 4 s) are scored anyway and flagged
  (``short_clip``): fewer windows make the scores noisier. Fewer than 5 frames cannot be scored (one window
  needs 5) and the reason is given.
- **FID** between generated and reference face crops, when an Inception network is supplied as a
  TorchScript file (``--inception``: e.g. the ``inception-2015-12-05.pt`` TorchScript export used by
  StyleGAN/clean-fid, called as ``model(images, return_features=True)`` on 0..255 RGB). torchvision is not
  available in this project, so the pytorch-fid Inception cannot be built; without the file FID is reported as
  unavailable with that reason.
- **Sharpness** of the lower face without any downloaded weights: variance of the Laplacian and the share of
  spectral energy above a quarter of the Nyquist frequency, on the lower half of the paper-rule face crops
  (384 px), mean over frames; with ``--reference`` also relative to the reference (generated / reference).
- **Project SyncNet sync confidence**: the cosine-similarity sync probability of a SyncNet trained by *this
  project* (``--project-syncnet``: ``wav2lip384.train`` checkpoint, export folder, Hub repo, or Wav2Lip's
  ``lipsync_expert.pth``) on the paper-rule crops, at offset 0 and over offsets -15..+15. It is labelled as
  such: it is not comparable to published LSE figures.
"""
# size-reason: the evaluation metrics (LSE-D/C through syncnet_python's network, FID, sharpness) and their CLI
#   glue, a few lines over the limit (helper E owns this module).

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.cli import user_errors_exit_2
from common.errors import UserFacingError

FPS = 25
VSHIFT = 15  # offsets -15..+15 frames (syncnet_python's default vshift)
MIN_TRACK = 100  # syncnet_python run_pipeline's --min_track (frames): shorter tracks are discarded there
LSE_CROP = 224
CROP_SCALE = 0.4  # syncnet_python's --crop_scale
MEDIAN_KERNEL = 13  # syncnet_python smooths track box sizes/centres with a 13-frame median filter
QUALITY_CROP = 384


# ------------------------------------------------------------------------------------------ SyncNet 'S'
def _syncnet_s_layers(kind: str):
    """Layer lists of syncnet_python's ``S`` model; index positions define the state-dict keys."""
    import torch.nn as nn

    def c2(i, o, k, s=1, p=0):
        return [nn.Conv2d(i, o, kernel_size=k, stride=s, padding=p), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    def c3(i, o, k, s=1, p=0):
        return [nn.Conv3d(i, o, kernel_size=k, stride=s, padding=p), nn.BatchNorm3d(o), nn.ReLU(inplace=True)]

    if kind == "audio":  # MFCC (B, 1, 13, 20) -> (B, 512, 1, 1)
        return [*c2(1, 64, 3, 1, 1), nn.MaxPool2d(1, 1),  # 13x20
                *c2(64, 192, 3, 1, 1), nn.MaxPool2d(3, (1, 2)),  # -> 11x9
                *c2(192, 384, 3, 1, 1), *c2(384, 256, 3, 1, 1), *c2(256, 256, 3, 1, 1), nn.MaxPool2d(3, 2),  # -> 5x4
                *c2(256, 512, (5, 4), 1, 0)]  # -> 1x1
    # lips: (B, 3, 5, 224, 224) -> (B, 512, 1, 1, 1)
    return [*c3(3, 96, (5, 7, 7), (1, 2, 2), 0), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # (1, 109) -> 54
            *c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # 26 -> 13
            *c3(256, 256, (1, 3, 3), 1, (0, 1, 1)), *c3(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *c3(256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # 13 -> 6
            *c3(256, 512, (1, 6, 6), 1, 0)]  # -> 1x1


def build_syncnet_s(embed_dim: int = 1024):
    """syncnet_python's ``S`` network (the one ``syncnet_v2.model`` holds), written from its layer table.

    Different from Wav2Lip's SyncNet: colour (BGR) 3-D convolutions over 5 frames of 224x224 faces and
    2-D convolutions over 13 MFCCs x 20 frames, each followed by a 512-512-1024 MLP.
    """
    import torch
    import torch.nn as nn

    class SyncNetS(nn.Module):
        def __init__(self):
            super().__init__()
            self.netcnnaud = nn.Sequential(*_syncnet_s_layers("audio"))
            self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
            self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
            self.netcnnlip = nn.Sequential(*_syncnet_s_layers("lip"))

        def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
            """(B, 1, 13, 20) MFCC -> (B, 1024)."""
            return self.netfcaud(self.netcnnaud(x).flatten(1))

        def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
            """(B, 3, 5, 224, 224) BGR 0..255 -> (B, 1024)."""
            return self.netfclip(self.netcnnlip(x).flatten(1))

    return SyncNetS()


def load_syncnet_s(spec: str | Path, device: str = "cpu"):
    """Load syncnet_python weights (a state dict with ``netcnnaud.*`` ... keys) from a path or Hub file."""
    import torch

    from common.hub import resolve_file

    how = ("Download syncnet_v2.model from the syncnet_python project and pass --lse-syncnet PATH (or set "
           "DH_SYNCNET_CHECKPOINT), or a Hub file 'owner/name:syncnet_v2.model'.")
    path = resolve_file(spec, default_filename="syncnet_v2.model", what="SyncNet weights for LSE-D/LSE-C",
                        how_to_fix=how)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserFacingError(f"{path} could not be read as a PyTorch state dict ({type(err).__name__}: {err})") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module.").removeprefix("__S__."): v for k, v in state.items()}
    if any(k.startswith(("face_encoder.", "audio_encoder.")) for k in state):
        raise UserFacingError(f"{path} is a Wav2Lip SyncNet (lip-sync expert), not syncnet_python's model: LSE-D/"
                              "LSE-C need syncnet_v2.model. Pass this file as --project-syncnet instead.")
    model = build_syncnet_s()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserFacingError(f"{path} does not match syncnet_python's S model (missing {len(missing)} keys, e.g. "
                              f"{missing[:2]}; unexpected {len(unexpected)}, e.g. {unexpected[:2]}). {how}")
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------ LSE maths
def offset_distances(video_emb, audio_emb, vshift: int = VSHIFT):
    """Mean Euclidean distance for each offset -vshift..+vshift, the syncnet_python way.

    video_emb, audio_emb: (N, D) tensors of window embeddings. The audio sequence is zero-padded by ``vshift``
    at both ends; for video window i and column j the audio window is ``i + j - vshift``. Returns (2*vshift+1,)
    mean distances (column j) and the (N, 2*vshift+1) per-window distances.
    """
    import torch
    import torch.nn.functional as F

    win = 2 * vshift + 1
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))  # (N + 2*vshift, D), zero rows
    rows = [F.pairwise_distance(video_emb[[i]].repeat(win, 1), padded[i:i + win]) for i in range(len(video_emb))]
    per = torch.stack(rows)  # (N, win)
    return per.mean(0), per


def lse_from_distances(mean_dist) -> dict[str, float]:
    """LSE-D = min over offsets of the mean distance; LSE-C = median - min; offset = vshift - argmin."""
    import torch

    vshift = (len(mean_dist) - 1) // 2
    minval, minidx = torch.min(mean_dist, 0)
    return {"lse_d": float(minval), "lse_c": float(torch.median(mean_dist) - minval),
            "av_offset_frames": int(vshift - int(minidx))}


def mfcc_16k(wav: np.ndarray) -> np.ndarray:
    """(T,) float [-1, 1] 16 kHz -> (13, N) MFCCs at 100 Hz, as syncnet_python computes them (int16 scale)."""
    import python_speech_features

    pcm = np.clip(wav, -1.0, 1.0) * 32768.0  # syncnet_python reads int16 samples with scipy.io.wavfile
    return np.asarray(python_speech_features.mfcc(pcm, 16000), dtype=np.float32).T


def lse_scores(model, crops_bgr: np.ndarray, wav: np.ndarray, *, batch: int = 20, device: str = "cpu") -> dict:
    """LSE-D/LSE-C of 224x224 BGR face crops (N, 224, 224, 3) and their 16 kHz audio."""
    import torch

    mfcc = mfcc_16k(wav)  # (13, M) at 100 Hz = 4 MFCC frames per video frame
    n = min(len(crops_bgr), len(wav) // 640)  # syncnet_python: min(frames, floor(samples / 640))
    last = n - 5  # windows 0..last-1, like syncnet_python (it also never scores the last possible window)
    if last < 1:
        raise UserFacingError(f"too short for LSE: {n} usable frames, a 5-frame window needs at least 6")
    vid = torch.from_numpy(np.ascontiguousarray(crops_bgr[:n].transpose(3, 0, 1, 2))).float()  # (3, N, 224, 224)
    aud = torch.from_numpy(mfcc).float()[None, None]  # (1, 1, 13, M)
    v_feats, a_feats = [], []
    with torch.no_grad():
        for i in range(0, last, batch):
            idx = range(i, min(last, i + batch))
            v = torch.stack([vid[:, j:j + 5] for j in idx]).to(device)  # (b, 3, 5, 224, 224)
            a = torch.cat([aud[:, :, :, j * 4:j * 4 + 20] for j in idx]).to(device)  # (b, 1, 13, 20)
            v_feats.append(model.forward_lip(v).cpu())
            a_feats.append(model.forward_aud(a).cpu())
    mean_dist, _ = offset_distances(torch.cat(v_feats), torch.cat(a_feats))
    return lse_from_distances(mean_dist) | {"windows": last,
                                            "mean_dist_by_offset": [round(float(x), 4) for x in mean_dist]}


# ------------------------------------------------------------------------------------------ face tracks
@dataclass
class FaceTrack:
    lse_crops: np.ndarray  # (N, 224, 224, 3) BGR uint8, syncnet_python crop rule
    quality_crops: np.ndarray  # (N, 384, 384, 3) BGR uint8, the paper's crop rule (as the models see faces)
    wav: np.ndarray  # (N * 640,) float32 16 kHz mono
    detector: str
    src_fps: float
    missing_frames: int


def _syncnet_python_crop(frame_bgr: np.ndarray, cx: float, cy: float, s: float) -> np.ndarray:
    """syncnet_python's crop: pad with 110 by s*(1+2*cs), take [cy-s, cy+s(1+2cs)] x [cx-s(1+cs), cx+s(1+cs)]."""
    import cv2

    bsi = int(s * (1 + 2 * CROP_SCALE))
    padded = np.pad(frame_bgr, ((bsi, bsi), (bsi, bsi), (0, 0)), mode="constant", constant_values=110)
    my, mx = cy + bsi, cx + bsi
    face = padded[int(my - s):int(my + s * (1 + 2 * CROP_SCALE)), int(mx - s * (1 + CROP_SCALE)):int(mx + s * (1 + CROP_SCALE))]
    return cv2.resize(face, (LSE_CROP, LSE_CROP))


def face_track(path: str | Path, detector, *, max_seconds: float | None = None) -> FaceTrack:
    """Decode ``path`` at 25 fps (twice: detect, then crop), find the face in every frame, cut both crops."""
    import cv2
    from scipy.signal import medfilt

    from wav2lip384.media import audio as audio_mod
    from wav2lip384 import faces
    from wav2lip384.media.audio import SAMPLES_PER_FRAME
    from wav2lip384.media.video import check_media, count_frames, frame_map, open_video

    check_media(path, kinds=("video",), what="video")
    wav = audio_mod.load_audio(path, max_seconds=None)
    src_fps, n_src = count_frames(Path(path))
    n = int(min(np.floor(n_src / src_fps * FPS + 1e-6), len(wav) // SAMPLES_PER_FRAME))
    if max_seconds:
        n = min(n, int(max_seconds * FPS))
    if n <= 0:
        raise UserFacingError(f"{Path(path).name}: no frames with audio to evaluate")
    fmap = frame_map(src_fps, n_src, n)
    wanted: dict[int, list[int]] = {}
    for k, j in enumerate(fmap):
        wanted.setdefault(int(j), []).append(k)
    raw = np.full((n, 4), np.nan, np.float32)
    shape = None
    stream = open_video(path)
    try:
        batch, idx = [], []
        for j, frame in enumerate(stream.frames):
            if j > fmap[-1]:
                break
            if j in wanted:
                shape = frame.shape
                batch.append(frame)
                idx.append(j)
            if len(batch) == 8 or (batch and j == fmap[-1]):
                for jj, box in zip(idx, faces.detect_faces(detector, batch).boxes):
                    for k in wanted[jj]:
                        raw[k] = box
                batch, idx = [], []
    finally:
        stream.close()
    ok = ~np.isnan(raw[:, 0])
    if not ok.any():
        raise UserFacingError(f"{Path(path).name}: no face found in any frame ({detector.description})")
    # frames without a detection borrow the nearest detected box (reported as missing_frames)
    near = np.array([np.flatnonzero(ok)[np.argmin(np.abs(np.flatnonzero(ok) - i))] for i in range(n)])
    boxes = raw[near]
    # syncnet_python track: size = max(w, h) / 2 and centre, median-filtered
    k = min(MEDIAN_KERNEL, n if n % 2 else n - 1) or 1
    s = medfilt(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2, k)
    cx = medfilt((boxes[:, 0] + boxes[:, 2]) / 2, k)
    cy = medfilt((boxes[:, 1] + boxes[:, 3]) / 2, k)
    squares = faces.face_boxes(boxes, shape)  # the paper's rule, as inference and training use it
    lse = np.zeros((n, LSE_CROP, LSE_CROP, 3), np.uint8)
    qual = np.zeros((n, QUALITY_CROP, QUALITY_CROP, 3), np.uint8)
    stream = open_video(path)
    try:
        for j, frame in enumerate(stream.frames):
            if j > fmap[-1]:
                break
            if j not in wanted:
                continue
            bgr = np.ascontiguousarray(frame[..., ::-1])
            for kk in wanted[j]:
                lse[kk] = _syncnet_python_crop(bgr, cx[kk], cy[kk], s[kk])
                qual[kk] = cv2.cvtColor(faces.crop_face(frame, squares[kk], QUALITY_CROP), cv2.COLOR_RGB2BGR)
    finally:
        stream.close()
    return FaceTrack(lse, qual, wav[: n * SAMPLES_PER_FRAME], detector.description, src_fps, int((~ok).sum()))


# ------------------------------------------------------------------------------------------ sharpness, FID
def sharpness(crops_bgr: np.ndarray) -> dict[str, float]:
    """Lower-face sharpness of (N, S, S, 3) crops: mean variance of Laplacian and high-frequency energy share."""
    import cv2

    lap, hf = [], []
    for img in crops_bgr:
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)
        lower = gray[gray.shape[0] // 2:]
        lap.append(cv2.Laplacian(lower, cv2.CV_64F).var())
        x = (lower - lower.mean()) * np.outer(np.hanning(lower.shape[0]), np.hanning(lower.shape[1]))
        power = np.abs(np.fft.fftshift(np.fft.fft2(x))) ** 2
        fy = np.fft.fftshift(np.fft.fftfreq(lower.shape[0]))[:, None]
        fx = np.fft.fftshift(np.fft.fftfreq(lower.shape[1]))[None, :]
        radius = np.sqrt(fx ** 2 + fy ** 2)  # cycles/pixel; Nyquist = 0.5
        total = power.sum()
        hf.append(float(power[radius > 0.125].sum() / total) if total > 0 else 0.0)
    return {"laplacian_var": float(np.mean(lap)), "hf_energy": float(np.mean(hf))}


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (N, D): |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)."""
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: regularise as pytorch-fid does
        eps = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def inception_features(model, crops_bgr: np.ndarray, batch: int = 16) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    out = []
    with torch.no_grad():
        for i in range(0, len(crops_bgr), batch):
            x = torch.from_numpy(np.ascontiguousarray(crops_bgr[i:i + batch, ..., ::-1])).permute(0, 3, 1, 2).float()
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)  # RGB 0..255
            out.append(model(x, return_features=True).reshape(len(x), -1).double().numpy())
    return np.concatenate(out)


def load_inception(spec: str | Path):
    import torch

    from common.hub import resolve_file

    path = resolve_file(spec, what="Inception network for FID",
                        how_to_fix="Pass --inception with a TorchScript Inception-v3 file "
                                   "(e.g. inception-2015-12-05.pt) or a Hub file 'owner/name:file'.")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:
        raise UserFacingError(f"{path} is not a TorchScript Inception network ({type(err).__name__}: {err})") from err


# ------------------------------------------------------------------------------------------ project SyncNet
PROJECT_LABEL = ("sync confidence from a SyncNet trained by this project (not syncnet_python): useful to compare "
                 "videos with each other, NOT comparable to published LSE-D/LSE-C")


def load_project_syncnet(spec: str | Path, device: str = "cpu"):
    """A Wav2Lip-style SyncNet: ``wav2lip384.train`` checkpoint/export, Hub repo, or lipsync_expert.pth."""
    from wav2lip384.weights import load_expert

    p = Path(str(spec))
    if p.is_file() and p.suffix == ".pth":
        from wav2lip384 import weights

        return weights.load_syncnet(str(p), size=96, device=device)
    return load_expert(spec, 96, device).eval()


def project_sync(model, crops_bgr: np.ndarray, wav: np.ndarray, vshift: int = VSHIFT) -> dict[str, Any]:
    """Cosine sync probability of 5-frame windows vs 16-mel-frame windows at offsets -vshift..+vshift."""
    import cv2
    import torch

    from wav2lip384.media import audio as audio_mod
    from wav2lip384.models.syncnet import SyncNet

    size = model.config.img_size
    mel = audio_mod.melspectrogram(wav).T  # (M, 80)
    n = len(crops_bgr)
    starts = [int(80.0 * i / FPS) for i in range(n)]
    n_win = max(0, min(n - 4, sum(1 for s in starts if s + 16 <= len(mel))))
    if n_win < 1:
        raise UserFacingError("too short for the project SyncNet: a 5-frame window needs at least 5 frames")
    faces = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops_bgr])
    lower = faces[:, size // 2:].astype(np.float32) / 255.0  # (N, S/2, S, 3)
    with torch.no_grad():
        v_in = torch.stack([torch.from_numpy(lower[i:i + 5]).permute(0, 3, 1, 2).reshape(-1, size - size // 2, size)
                            for i in range(n_win)])  # (W, 15, S/2, S)
        a_in = torch.stack([torch.from_numpy(np.ascontiguousarray(mel[s:s + 16].T))[None] for s in starts[:n_win]])
        v = torch.cat([model.embed_faces(v_in[i:i + 32]) for i in range(0, n_win, 32)])
        a = torch.cat([model.embed_audio(a_in[i:i + 32]) for i in range(0, n_win, 32)])
        sims = []
        for off in range(-vshift, vshift + 1):
            lo, hi = max(0, -off), min(n_win, n_win - off)
            sims.append(float(SyncNet.sync_probability(a[lo + off:hi + off], v[lo:hi]).mean()) if hi > lo else float("nan"))
    sims_np = np.array(sims)
    best = int(np.nanargmax(sims_np))
    return {"label": PROJECT_LABEL, "windows": n_win, "sync_prob_at_offset_0": sims[vshift],
            "best_offset_frames": best - vshift, "best_sync_prob": float(sims_np[best]),
            "confidence": float(sims_np[best] - np.nanmedian(sims_np)),
            "sync_prob_by_offset": [round(x, 4) for x in sims]}


# ------------------------------------------------------------------------------------------ whole evaluation
def _guard(fn, *args, **kwargs) -> dict[str, Any]:
    try:
        return {"available": True, **fn(*args, **kwargs)}
    except UserFacingError as err:
        return {"available": False, "reason": str(err)}


def evaluate(video: str | Path, reference: str | Path | None = None, *, lse_syncnet: str = "",
             inception: str = "", project_syncnet: str = "", detector=None, max_seconds: float | None = None,
             device: str = "cpu") -> dict[str, Any]:
    from wav2lip384 import faces

    detector = detector or faces.build_detector()
    tracks = {"video": face_track(video, detector, max_seconds=max_seconds)}
    if reference:
        tracks["reference"] = face_track(reference, detector, max_seconds=max_seconds)
    n = len(tracks["video"].lse_crops)
    notes = []
    if n < MIN_TRACK:
        notes.append(f"short clip: {n} frames ({n / FPS:.2f} s) < {MIN_TRACK} frames (4 s), syncnet_python's "
                     "minimum face track; its pipeline would discard it. Scored anyway over fewer windows, so the "
                     "sync scores are noisier than on longer clips.")
    out: dict[str, Any] = {"video": str(video), "reference": str(reference) if reference else None, "fps": FPS,
                           "frames": n, "duration_s": round(n / FPS, 3), "short_clip": n < MIN_TRACK,
                           "detector": detector.description,
                           "frames_without_face": {k: t.missing_frames for k, t in tracks.items()}, "notes": notes}

    # LSE-D / LSE-C
    if not lse_syncnet:
        out["lse"] = {"available": False, "reason": "no syncnet_python weights given: pass --lse-syncnet "
                      "syncnet_v2.model (path or Hub 'owner/name:file') or set DH_SYNCNET_CHECKPOINT"}
    else:
        try:
            s_model = load_syncnet_s(lse_syncnet, device)
            out["lse"] = {"available": True, "weights": str(lse_syncnet),
                          **{k: _guard(lse_scores, s_model, t.lse_crops, t.wav, device=device)
                             for k, t in tracks.items()}}
        except UserFacingError as err:
            out["lse"] = {"available": False, "reason": str(err)}

    # FID
    if not reference:
        out["fid"] = {"available": False, "reason": "FID needs --reference (real frames to compare against)"}
    elif not inception:
        out["fid"] = {"available": False, "reason": "no Inception weights given (--inception TorchScript file); "
                      "torchvision is not available here, so the pytorch-fid network cannot be built"}
    else:
        try:
            net = load_inception(inception)
            f_gen = inception_features(net, tracks["video"].quality_crops)
            f_ref = inception_features(net, tracks["reference"].quality_crops)
            out["fid"] = {"available": True, "fid": frechet_distance(f_gen, f_ref), "n_video": len(f_gen),
                          "n_reference": len(f_ref), "weights": str(inception),
                          "note": "face crops (paper rule, 384 px -> 299); with fewer frames than feature "
                                  "dimensions the covariances are rank-deficient and FID is biased upwards"}
        except UserFacingError as err:
            out["fid"] = {"available": False, "reason": str(err)}

    # sharpness
    sharp = {k: sharpness(t.quality_crops) for k, t in tracks.items()}
    if reference:
        sharp["relative"] = {m: sharp["video"][m] / sharp["reference"][m] if sharp["reference"][m] else None
                             for m in sharp["video"]}
    out["sharpness"] = {"available": True, "region": "lower half of the paper-rule face crop, 384 px", **sharp}

    # project SyncNet
    if not project_syncnet:
        out["project_syncnet"] = {"available": False, "label": PROJECT_LABEL,
                                  "reason": "no project SyncNet given (--project-syncnet: a `wav2lip384.train "
                                            "syncnet` last.pt or export/ folder, or a Hub repo)"}
    else:
        try:
            sn = load_project_syncnet(project_syncnet, device)
            out["project_syncnet"] = {"available": True, "label": PROJECT_LABEL, "weights": str(project_syncnet),
                                      **{k: _guard(project_sync, sn, t.quality_crops, t.wav)
                                         for k, t in tracks.items()}}
        except UserFacingError as err:
            out["project_syncnet"] = {"available": False, "label": PROJECT_LABEL, "reason": str(err)}
    return out


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    from common.settings import Settings

    p = argparse.ArgumentParser(prog="python -m wav2lip384.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--video", required=True, help="the video to score (e.g. a lip-synced result)")
    p.add_argument("--reference", default=None, help="a real video of the same person (FID, relative sharpness)")
    p.add_argument("--lse-syncnet", default=None,
                   help="syncnet_python's syncnet_v2.model (path or 'owner/name:file'); default DH_SYNCNET_CHECKPOINT")
    p.add_argument("--inception", default="", help="TorchScript Inception-v3 for FID (path or 'owner/name:file')")
    p.add_argument("--project-syncnet", default="", help="a SyncNet trained with `python -m wav2lip384.train syncnet`")
    p.add_argument("--max-seconds", type=float, default=None, help="only the first N seconds")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format; kept for clarity)")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    from wav2lip384 import faces

    detector = faces.build_detector(settings.s3fd_checkpoint, device=settings.device)
    result = evaluate(args.video, args.reference,
                      lse_syncnet=settings.syncnet_checkpoint if args.lse_syncnet is None else args.lse_syncnet,
                      inception=args.inception, project_syncnet=args.project_syncnet, detector=detector,
                      max_seconds=args.max_seconds, device=settings.device)
    print(json.dumps(result, indent=1))
    return 0
