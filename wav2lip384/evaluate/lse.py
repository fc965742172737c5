"""Measure lip-sync and visual quality of a video: ``python -m wav2lip384.evaluate --video V [--source R] [--json]``.

Measures (each says when it could not be computed and why, never silently):

- **LSE-D / LSE-C** following the syncnet_python protocol (Chung & Zisserman's SyncNet as used by Wav2Lip's
  evaluation): video at 25 fps, face track cropped to 224x224 with syncnet_python's rule (box size/centre
  median-filtered over 13 frames, crop scale 0.4, grey padding 110), BGR pixels 0..255; audio 16 kHz as int16
  values, 13 MFCCs at 100 Hz (``python_speech_features.mfcc`` defaults); 5-frame video windows against
  20-MFCC-frame audio windows; offsets -15..+15 frames; distance = Euclidean between the 1024-d embeddings;
  per offset the mean over windows; LSE-D = the minimum of these means, LSE-C = median - minimum, AV offset =
  15 - argmin; frame-wise confidence = median - each window's distance at the best offset, median-filtered
  over 9. Proven against syncnet_python's own outputs (``tests/test_lse_golden.py``: the golden under
  ``../shared/reference/golden``). Needs syncnet_python's weights (``syncnet_v2.model``) for
  :class:`~wav2lip384.models.syncnet.SyncNetS`: by default LatentSync's copy on the Hub
  (:data:`DEFAULT_SYNCNET`), else ``--lse-syncnet`` / DH_SYNCNET_CHECKPOINT (a path or ``owner/name:file``).
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
  (384 px), mean over frames; with ``--source`` also relative to the source (generated / source).
- **The mouth in pauses**: mean absolute frame-to-frame change of the mouth region while the speech pauses
  (:mod:`wav2lip384.evaluate.mouth` defines it); lower is stiller.
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
from common.settings import Settings
from wav2lip384.evaluate.mouth import pause_motion, sharpness

FPS = 25
VSHIFT = 15  # offsets -15..+15 frames (syncnet_python's default vshift)
MIN_TRACK = 100  # syncnet_python run_pipeline's --min_track (frames): shorter tracks are discarded there
LSE_CROP = 224
CROP_SCALE = 0.4  # syncnet_python's --crop_scale
MEDIAN_KERNEL = 13  # syncnet_python smooths track box sizes/centres with a 13-frame median filter
QUALITY_CROP = 384


# ------------------------------------------------------------------------------------------ SyncNet 'S'
# The published weights: syncnet_python's syncnet_v2.model, as LatentSync's repository carries it (its S3FD copy,
# auxiliary/sfd_face.pth, lies beside it; the CLI's face detector follows DH_S3FD_CHECKPOINT).
DEFAULT_SYNCNET: str = Settings.syncnet_checkpoint  # "ByteDance/LatentSync-1.5:auxiliary/syncnet_v2.model"
SYNCNET_S3FD = "ByteDance/LatentSync-1.5:auxiliary/sfd_face.pth"
SYNCNET_ID = "syncnet_v2"  # how the provenance record names this network
HOW_TO_GET_SYNCNET = (
    "Lip-sync scores need syncnet_python's syncnet_v2.model. By default it comes from the Hugging Face Hub "
    f"({DEFAULT_SYNCNET.replace(':', ' : ')}); offline, download that file elsewhere and set "
    "DH_SYNCNET_CHECKPOINT (or --lse-syncnet) to its path. DH_SYNCNET_CHECKPOINT='' turns the scores off.")


def build_syncnet_s(embed_dim: int = 1024):
    """syncnet_python's ``S`` network (:class:`wav2lip384.models.syncnet.SyncNetS`), fresh weights."""
    from wav2lip384.models.syncnet import SyncNetS

    return SyncNetS(embed_dim)


def syncnet_provenance(spec: str | Path = DEFAULT_SYNCNET):
    """Which syncnet_v2.model ``spec`` names, WITHOUT downloading: Hub repo, file, commit and sha256 (the cached
    blob's name) or a local path and its sha256 (:class:`wav2lip384.weights.Provenance`, origin "none" when the
    spec names nothing usable)."""
    from wav2lip384.weights import Provenance, file_sha256, hub_cached_file

    spec_str = str(spec or "")
    base = {"model": SYNCNET_ID, "spec": spec_str, "default_spec": DEFAULT_SYNCNET}
    if not spec_str:
        return Provenance(origin="none", pending="turned off (DH_SYNCNET_CHECKPOINT is empty)", **base)
    path = Path(spec_str).expanduser()
    if path.is_file():
        return Provenance(origin="local", path=str(path), sha256=file_sha256(path), **base)
    repo, sep, filename = spec_str.partition(":")
    if path.is_absolute() or spec_str.startswith((".", "~")) or repo.count("/") != 1 or not sep:
        return Provenance(origin="local", path=str(path), pending="nothing there", **base)
    cached = hub_cached_file(repo, filename)
    if cached is None:
        return Provenance(origin="hub", repo=repo, filename=filename,
                          pending="not downloaded yet (commit and sha256 known after the download)", **base)
    return Provenance(origin="hub", repo=repo, filename=filename, revision=cached.revision, path=str(cached.path),
                      sha256=cached.sha256 or file_sha256(cached.path), git_sha1=cached.git_sha1, **base)


def load_syncnet_s(spec: str | Path = DEFAULT_SYNCNET, device: str = "cpu"):
    """syncnet_python's S with the weights ``spec`` names (a path or a Hub file ``owner/name:path``), eval mode.

    Loaded as the generators are: ``torch.load(weights_only=True)`` (refuses pickled code), the tensors matched
    key for key and shape for shape (:func:`wav2lip384.weights.load_state_dict_strict`); the one tolerance is
    BatchNorm's ``num_batches_tracked`` counters, which files saved by PyTorch before 0.4.1 lack and which eval
    mode never reads (syncnet_python copies by name, so it loads such files too). ``model.provenance`` records
    which file it was (:func:`syncnet_provenance`). Every failure is one :class:`UserFacingError` saying what to do.
    """
    import torch

    from common.hub import resolve_file
    from wav2lip384.weights import load_state_dict_file, load_state_dict_strict

    path = resolve_file(spec, what="SyncNet weights for the lip-sync scores (syncnet_v2.model)",
                        how_to_fix=HOW_TO_GET_SYNCNET)
    state = load_state_dict_file(path)
    state = {k.removeprefix("__S__."): v for k, v in state.items()}  # a SyncNetInstance's own state dict
    if any(k.startswith(("face_encoder.", "audio_encoder.")) for k in state):
        raise UserFacingError(f"{path} is a Wav2Lip SyncNet (lip-sync expert), not syncnet_python's model: LSE-D/"
                              "LSE-C need syncnet_v2.model. Pass this file as --project-syncnet instead.")
    model = build_syncnet_s()
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros_like(v)
    load_state_dict_strict(model, state, source=f"{Path(path).name} (syncnet_v2.model expected)")
    model.provenance = syncnet_provenance(spec)
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------ LSE maths
def offset_distances(video_emb, audio_emb, vshift: int = VSHIFT):
    """Distances for each offset -vshift..+vshift, the syncnet_python way (its ``calc_pdist``).

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


def lse_from_distances(mean_dist, per_window=None) -> dict[str, Any]:
    """LSE-D = min over offsets of the mean distance; LSE-C = median - min; AV offset = vshift - argmin.

    With ``per_window`` (N, 2*vshift+1) also the frame-wise confidence, as syncnet_python prints it: median of
    the mean distances minus each window's distance at the best offset, median-filtered over 9 windows."""
    import torch
    from scipy.signal import medfilt

    vshift = (len(mean_dist) - 1) // 2
    minval, minidx = torch.min(mean_dist, 0)
    out: dict[str, Any] = {"lse_d": float(minval), "lse_c": float(torch.median(mean_dist) - minval),
                           "av_offset_frames": int(vshift - int(minidx))}
    if per_window is not None:
        fconf = torch.median(mean_dist).numpy() - per_window[:, int(minidx)].numpy()
        out["framewise_conf"] = medfilt(fconf, kernel_size=9)
    return out


def mfcc_16k(wav: np.ndarray) -> np.ndarray:
    """(T,) float [-1, 1] 16 kHz -> (13, N) float64 MFCCs at 100 Hz, as syncnet_python computes them: on the
    int16 sample values it reads with ``scipy.io.wavfile`` (``python_speech_features.mfcc`` defaults), in float64
    (float32 samples changed the MFCCs by up to 1e-3 relative)."""
    import python_speech_features

    pcm = np.round(np.clip(np.asarray(wav, np.float64), -1.0, 32767 / 32768) * 32768.0)  # the int16 values
    return np.asarray(python_speech_features.mfcc(pcm, 16000), dtype=np.float64).T


def syncnet_features(model, crops_bgr: np.ndarray, wav: np.ndarray, *, batch: int = 20,
                     device: str = "cpu") -> dict[str, Any]:
    """The protocol's embeddings (syncnet_python ``SyncNetInstance.evaluate``): for every 5-frame window of the
    224x224 BGR crops (N, 224, 224, 3) uint8 and its 20-step MFCC window (4 MFCC steps per 25 fps frame), the
    lip and audio embeddings, each (W, 1024). syncnet_python never scores the last possible window
    (W = min(frames, samples // 640) - 5); neither do we, so the figures are its figures."""
    import torch

    mfcc = mfcc_16k(wav)  # (13, M) at 100 Hz
    n = min(len(crops_bgr), len(wav) // 640)
    last = n - 5
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
            v_feats.append(model.forward_lip(v).float().cpu())
            a_feats.append(model.forward_aud(a).float().cpu())
    return {"mfcc": mfcc, "lip": torch.cat(v_feats), "audio": torch.cat(a_feats)}


def lse_scores(model, crops_bgr: np.ndarray, wav: np.ndarray, *, batch: int = 20, device: str = "cpu") -> dict:
    """LSE-D/LSE-C, AV offset and frame-wise confidence of 224x224 BGR face crops (N, 224, 224, 3) and their
    16 kHz audio."""
    feats = syncnet_features(model, crops_bgr, wav, batch=batch, device=device)
    mean_dist, per = offset_distances(feats["lip"], feats["audio"])
    scores = lse_from_distances(mean_dist, per)
    scores["framewise_conf"] = [round(float(x), 4) for x in scores["framewise_conf"]]
    return scores | {"windows": len(feats["lip"]), "mean_dist_by_offset": [round(float(x), 4) for x in mean_dist]}


# ------------------------------------------------------------------------------------------ face tracks
@dataclass
class FaceTrack:
    lse_crops: np.ndarray  # (N, 224, 224, 3) BGR uint8, syncnet_python crop rule
    quality_crops: np.ndarray  # (N, 384, 384, 3) BGR uint8, the paper's crop rule (as the models see faces)
    wav: np.ndarray  # (N * 640,) float32 16 kHz mono
    detector: str
    src_fps: float
    missing_frames: int
    boxes: np.ndarray | None = None  # (N, 4) the detector's raw boxes (x1, y1, x2, y2), NaN where none was found


def _syncnet_python_crop(frame_bgr: np.ndarray, cx: float, cy: float, s: float) -> np.ndarray:
    """syncnet_python's crop: pad with 110 by s*(1+2*cs), take [cy-s, cy+s(1+2cs)] x [cx-s(1+cs), cx+s(1+cs)]."""
    import cv2

    bsi = int(s * (1 + 2 * CROP_SCALE))
    padded = np.pad(frame_bgr, ((bsi, bsi), (bsi, bsi), (0, 0)), mode="constant", constant_values=110)
    my, mx = cy + bsi, cx + bsi
    face = padded[int(my - s):int(my + s * (1 + 2 * CROP_SCALE)), int(mx - s * (1 + CROP_SCALE)):int(mx + s * (1 + CROP_SCALE))]
    return cv2.resize(face, (LSE_CROP, LSE_CROP))


def face_track(path: str | Path, detector, *, max_seconds: float | None = None,
               boxes: np.ndarray | None = None) -> FaceTrack:
    """Decode ``path`` at 25 fps (twice: detect, then crop), find the face in every frame, cut both crops.

    ``boxes``: the raw boxes of another track of the same frames (:attr:`FaceTrack.boxes`, same length), used
    instead of detecting again: videos rendered from one avatar have their faces in the same places, so the
    Compare tab finds them once and every model's mouth is cut from the same crops."""
    import cv2
    from scipy.signal import medfilt

    from wav2lip384 import faces
    from wav2lip384.media import audio as audio_mod
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
    given = boxes is not None and len(boxes) == n
    raw = np.array(boxes, np.float32) if given else np.full((n, 4), np.nan, np.float32)
    shape = None
    stream = open_video(path)
    try:
        batch, idx = [], []
        for j, frame in enumerate(stream.frames):
            if j > fmap[-1]:
                break
            if j in wanted:
                shape = frame.shape
                if given:
                    continue
                batch.append(frame)
                idx.append(j)
            if len(batch) == 8 or (batch and j == fmap[-1]):
                for jj, box in zip(idx, faces.detect_faces(detector, batch).boxes, strict=True):
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
    return FaceTrack(lse, qual, wav[: n * SAMPLES_PER_FRAME], detector.description, src_fps, int((~ok).sum()), raw)


# ------------------------------------------------------------------------------------------ FID
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


def _short_note(n: int) -> str:
    return (f"short clip: {n} frames ({n / FPS:.2f} s) < {MIN_TRACK} frames (4 s), syncnet_python's minimum face "
            "track; its pipeline would discard it. Scored anyway over fewer windows, so the sync scores are noisier "
            "than on longer clips.")


def video_scores(video: str | Path, *, syncnet=None, detector=None, max_seconds: float | None = None,
                 device: str = "cpu", boxes: np.ndarray | None = None) -> dict[str, Any]:
    """The figures of one talking video from one face track: the protocol's LSE-D, LSE-C and AV offset (when a
    loaded :func:`load_syncnet_s` model is given), mouth sharpness and how still the mouth stays in pauses.

    Returns ``{"frames", "short_clip", "detector", "lse": {...} | None, "sharpness": {...},
    "mouth_in_pauses": {...}, "boxes"}``; ``lse`` holds ``available`` False and the reason when the clip is too
    short. ``boxes``: the ``"boxes"`` of another video of the same avatar frames (see :func:`face_track`).
    """
    from wav2lip384 import faces

    detector = detector or faces.build_detector()
    track = face_track(video, detector, max_seconds=max_seconds, boxes=boxes)
    n = len(track.lse_crops)
    out: dict[str, Any] = {"video": str(video), "frames": n, "short_clip": n < MIN_TRACK,
                           "detector": detector.description, "frames_without_face": track.missing_frames}
    out["lse"] = None if syncnet is None else _guard(lse_scores, syncnet, track.lse_crops, track.wav, device=device)
    out["sharpness"] = sharpness(track.quality_crops)
    out["mouth_in_pauses"] = pause_motion(track.quality_crops, track.wav, FPS)
    out["boxes"] = track.boxes
    return out


def lse_of(video_path: str | Path, *, syncnet: Any = DEFAULT_SYNCNET, detector=None,
           max_seconds: float | None = None, device: str = "cpu") -> dict[str, Any]:
    """LSE-D, LSE-C and AV offset of one talking video, the protocol's way (for gates and scripts).

    ``syncnet``: a model from :func:`load_syncnet_s` (load once, score many) or a weights spec (default: the
    published syncnet_v2.model from the Hub). Returns ``{"lse_d", "lse_c", "av_offset_frames", "windows",
    "frames", "short_clip", "weights"}``. Raises :class:`UserFacingError` when the weights cannot be had, no
    face is found or the clip is too short for one window.
    """
    model = load_syncnet_s(syncnet, device) if isinstance(syncnet, (str, Path)) else syncnet
    res = video_scores(video_path, syncnet=model, detector=detector, max_seconds=max_seconds, device=device)
    lse = res["lse"]
    if not lse["available"]:
        raise UserFacingError(f"{Path(video_path).name}: {lse['reason']}")
    prov = getattr(model, "provenance", None)
    return {"lse_d": lse["lse_d"], "lse_c": lse["lse_c"], "av_offset_frames": lse["av_offset_frames"],
            "windows": lse["windows"], "frames": res["frames"], "short_clip": res["short_clip"],
            "weights": prov.describe() if prov is not None else "given model"}


def evaluate(video: str | Path, reference: str | Path | None = None, *, lse_syncnet: Any = "",
             inception: str = "", project_syncnet: str = "", detector=None, max_seconds: float | None = None,
             device: str = "cpu") -> dict[str, Any]:
    """Every measure of ``video`` (and of ``reference``, the real video, when given). ``lse_syncnet``: a weights
    spec ("" = LSE off) or a model from :func:`load_syncnet_s`."""
    from wav2lip384 import faces

    detector = detector or faces.build_detector()
    tracks = {"video": face_track(video, detector, max_seconds=max_seconds)}
    if reference:
        tracks["reference"] = face_track(reference, detector, max_seconds=max_seconds)
    n = len(tracks["video"].lse_crops)
    notes = [_short_note(n)] if n < MIN_TRACK else []
    out: dict[str, Any] = {"video": str(video), "reference": str(reference) if reference else None, "fps": FPS,
                           "frames": n, "duration_s": round(n / FPS, 3), "short_clip": n < MIN_TRACK,
                           "detector": detector.description,
                           "frames_without_face": {k: t.missing_frames for k, t in tracks.items()}, "notes": notes}

    # LSE-D / LSE-C
    if lse_syncnet is None or (isinstance(lse_syncnet, (str, Path)) and not str(lse_syncnet)):
        out["lse"] = {"available": False, "reason": "lip-sync scores are turned off (DH_SYNCNET_CHECKPOINT is "
                      "empty). " + HOW_TO_GET_SYNCNET}
    else:
        try:
            s_model = load_syncnet_s(lse_syncnet, device) if isinstance(lse_syncnet, (str, Path)) else lse_syncnet
            prov = getattr(s_model, "provenance", None)
            out["lse"] = {"available": True, "weights": prov.describe() if prov is not None else "given model",
                          **{k: _guard(lse_scores, s_model, t.lse_crops, t.wav, device=device)
                             for k, t in tracks.items()}}
        except UserFacingError as err:
            out["lse"] = {"available": False, "reason": str(err)}

    # FID
    if not reference:
        out["fid"] = {"available": False, "reason": "FID needs --source (real frames to compare against)"}
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

    # the mouth in pauses
    out["mouth_in_pauses"] = {"available": True, "unit": "mean |change| of grey levels (0..255) per frame, lower "
                              "is stiller", **{k: pause_motion(t.quality_crops, t.wav, FPS) for k, t in tracks.items()}}

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


def summary_text(result: dict[str, Any]) -> str:
    """The figures of :func:`evaluate`'s result in plain lines (the CLI's output without ``--json``)."""
    lines = [f"{result['frames']} frames at {FPS} fps ({result['duration_s']} s); faces: {result['detector']}"]
    lines += result["notes"]
    who = [("video", result["video"])] + ([("source", result["reference"])] if result["reference"] else [])
    lse = result["lse"]
    for key, name in who:
        k = "reference" if key == "source" else key
        if not lse["available"]:
            row = "LSE unavailable"
        elif not lse[k]["available"]:
            row = f"LSE unavailable: {lse[k]['reason']}"
        else:
            row = (f"LSE-D {lse[k]['lse_d']:.3f} (lower is better) · LSE-C {lse[k]['lse_c']:.3f} (higher is better)"
                   f" · AV offset {lse[k]['av_offset_frames']:+d} frames")
        pm = result["mouth_in_pauses"][k]["pause_motion"]
        row += (f" · mouth sharpness {result['sharpness'][k]['laplacian_var']:.0f}"
                + (f" · mouth motion in pauses {pm:.2f}" if pm is not None else " · no pauses in the speech"))
        lines.append(f"{key:6s} {Path(name).name}: {row}")
    if not lse["available"]:
        lines.append(f"LSE: {lse['reason']}")
    else:
        lines.append(f"SyncNet weights: {lse['weights']}")
    return "\n".join(lines)


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wav2lip384.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--video", required=True, help="the video to score (e.g. a lip-synced result)")
    p.add_argument("--source", "--reference", dest="source", default=None,
                   help="the real video of the same person: scored the same way, so a figure is read beside it "
                        "(also FID and relative sharpness)")
    p.add_argument("--lse-syncnet", default=None,
                   help="syncnet_python's syncnet_v2.model (path or 'owner/name:file'); default "
                        f"DH_SYNCNET_CHECKPOINT, else {DEFAULT_SYNCNET}")
    p.add_argument("--inception", default="", help="TorchScript Inception-v3 for FID (path or 'owner/name:file')")
    p.add_argument("--project-syncnet", default="", help="a SyncNet trained with `python -m wav2lip384.train syncnet`")
    p.add_argument("--max-seconds", type=float, default=None, help="only the first N seconds")
    p.add_argument("--json", action="store_true", help="print every measure as JSON")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    from wav2lip384 import faces

    detector = faces.build_detector(settings.s3fd_checkpoint, device=settings.device)
    result = evaluate(args.video, args.source,
                      lse_syncnet=settings.syncnet_checkpoint if args.lse_syncnet is None else args.lse_syncnet,
                      inception=args.inception, project_syncnet=args.project_syncnet, detector=detector,
                      max_seconds=args.max_seconds, device=settings.device)
    print(json.dumps(result, indent=1) if args.json else summary_text(result))
    return 0
