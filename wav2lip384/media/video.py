"""Video and image I/O through the ffmpeg binary bundled with ``imageio-ffmpeg`` (there is no ffprobe).

- :func:`sniff_format` / :func:`check_media` look at a file's first bytes so a file that is not what its
  extension says is refused with a :class:`UserFacingError` before ffmpeg guesses something odd.
- :func:`probe` parses ``ffmpeg -i`` (duration, streams) for reports and tests.
- :func:`open_video` / :func:`read_image` decode any input ffmpeg knows (HEVC portrait 1080x1920, 25/30 fps,
  images) into RGB ``uint8`` frames (H, W, 3), piped, never via temporary files. Videos come out at one
  constant rate (:func:`nominal_fps`; ffmpeg's ``fps`` filter places every frame by its own timestamp), so
  a variable-frame-rate phone clip plays at its real speed: frame ``i`` is what was on screen at ``i / fps``.
- :class:`VideoWriter` pipes raw RGB frames into ffmpeg, which encodes H.264 (yuv420p) and muxes AAC (or FLAC) audio
  from a file in the same process: no temporary AVI, no second mux pass, no ``shell=True``.
  ``fmt="mp4"`` writes a fast-start mp4 (playable while downloading); ``fmt="ts"`` an MPEG-TS segment that
  concatenates seamlessly with the next one (for streamed answers).
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from common.errors import UserFacingError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".ts", ".mpg", ".mpeg", ".gif"}
AUDIO_EXTS = {".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".oga", ".webm", ".mp4"}

# extension -> content formats (from :func:`sniff_format`) a file with that extension may hold
_EXPECTED = {
    ".jpg": {"jpeg"}, ".jpeg": {"jpeg"}, ".png": {"png"}, ".bmp": {"bmp"}, ".webp": {"webp"},
    ".tif": {"tiff"}, ".tiff": {"tiff"}, ".gif": {"gif"},
    ".mp4": {"isobmff"}, ".mov": {"isobmff"}, ".m4v": {"isobmff"}, ".m4a": {"isobmff"},
    ".mkv": {"matroska"}, ".webm": {"matroska"}, ".avi": {"avi"}, ".ts": {"mpegts"},
    ".mpg": {"mpegps", "mpegts"}, ".mpeg": {"mpegps", "mpegts"},
    ".wav": {"wav"}, ".mp3": {"mp3"}, ".aac": {"adts"}, ".flac": {"flac"},
    ".ogg": {"ogg"}, ".opus": {"ogg"}, ".oga": {"ogg"},
}


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def sniff_format(path: str | Path) -> str | None:
    """The container/image format from the file's magic bytes, or None when unknown."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"RIFF" and head[8:11] == b"AVI":
        return "avi"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "isobmff"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2):
        return "mp3"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "adts"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpegps"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    return None


def check_media(path: str | Path, *, kinds: tuple[str, ...] = ("image", "video"), what: str = "file") -> str:
    """Check ``path`` exists, has a supported extension of one of ``kinds`` and holds what it says.

    Returns "image", "video" or "audio". Raises :class:`UserFacingError` otherwise.
    """
    p = Path(path)
    if not p.is_file():
        raise UserFacingError(f"The {what} {p.name or path} does not exist or is not a file.")
    if p.stat().st_size == 0:
        raise UserFacingError(f"The {what} {p.name} is empty.")
    ext = p.suffix.lower()
    allowed = {"image": IMAGE_EXTS, "video": VIDEO_EXTS, "audio": AUDIO_EXTS}
    kind = next((k for k in kinds if ext in allowed[k]), None)
    if kind is None:
        exts = sorted(set().union(*(allowed[k] for k in kinds)))
        raise UserFacingError(f"The {what} {p.name} has an unsupported type '{ext or '(none)'}'; use one of {', '.join(exts)}.")
    found = sniff_format(p)
    if found not in _EXPECTED.get(ext, {found}):
        raise UserFacingError(
            f"The {what} {p.name} is not a valid {ext[1:].upper()} file"
            f" (its content looks like {found.upper() if found else 'something else'}). Please upload a real {ext[1:]} file.")
    return "image" if ext in IMAGE_EXTS and ext != ".gif" else kind


# ------------------------------------------------------------------------------------------------- probe
@dataclass
class MediaInfo:
    """What ``ffmpeg -i`` says about a file."""

    duration_s: float | None
    video: list[dict] = field(default_factory=list)  # {"codec", "width", "height", "fps"}
    audio: list[dict] = field(default_factory=list)  # {"codec", "sample_rate", "channels"}
    format: str = ""


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #\d+:\d+[^:]*:\s*(Video|Audio):\s*([^\s,]+)(.*)")


def probe(path: str | Path) -> MediaInfo:
    """Parse ``ffmpeg -i path`` stderr (the bundled ffmpeg has no ffprobe)."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                          errors="replace", timeout=60)
    text = proc.stderr
    if "Input #0" not in text:
        raise UserFacingError(f"{Path(path).name} could not be read as media: {_last_line(text)}")
    fmt = re.search(r"Input #0, ([^ ]+),? from", text)
    m = _DURATION.search(text)
    info = MediaInfo(duration_s=(int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])) if m else None,
                     format=fmt[1].rstrip(",") if fmt else "")
    for kind, codec, rest in _STREAM.findall(text):
        start = re.search(r"start (-?[\d.]+)", rest)
        start = float(start[1]) if start else None
        if kind == "Video":
            size = re.search(r"(\d{2,5})x(\d{2,5})", rest)
            fps = re.search(r"([\d.]+) fps", rest)
            tbr = re.search(r"([\d.]+)(k?) tbr", rest)
            info.video.append({"codec": codec, "width": int(size[1]) if size else None,
                               "height": int(size[2]) if size else None, "fps": float(fps[1]) if fps else None,
                               "tbr": float(tbr[1]) * (1000 if tbr[2] else 1) if tbr else None, "start": start})
        else:
            rate = re.search(r"(\d+) Hz", rest)
            ch = re.search(r"Hz,\s*([^,]+)", rest)
            info.audio.append({"codec": codec, "sample_rate": int(rate[1]) if rate else None,
                               "channels": ch[1].strip() if ch else None, "start": start})
    return info


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no message)"


# ---------------------------------------------------------------------------------------------- reading
def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3); EXIF orientation is applied."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile + imdecode: works for non-ASCII paths too
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise UserFacingError(f"The image {Path(path).name} could not be decoded; is it a valid image file?")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass
class VideoStream:
    """An open video: ``fps``, ``width``, ``height``, ``n_frames`` (estimate) and an iterator of RGB frames."""

    fps: float
    width: int
    height: int
    n_frames: int
    frames: Iterator[np.ndarray]

    def close(self) -> None:
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()


MAX_NOMINAL_FPS = 60.0


def nominal_fps(fps: float | None, tbr: float | None) -> Fraction | None:
    """The constant rate a video is decoded at, from ``ffmpeg -i``'s average rate (``fps``) and base rate (``tbr``).

    A constant-rate file has fps == tbr. A variable-rate one (phones; frames 1/30 s or 2/30 s apart) has an
    average below its base rate: decoding at the base rate keeps every real frame (repeated where the source
    waited longer), and the frame count over the rate is the real duration. A base rate far above the
    average (e.g. "90k tbr") is a clock, not a frame rate: the average is used then.
    """
    rate = None
    if fps and tbr and fps - 0.01 <= tbr <= 1.5 * fps + 0.01:
        rate = tbr
    elif fps or tbr:
        rate = fps or tbr
    if not rate or rate <= 0:
        return None
    rate = min(float(rate), MAX_NOMINAL_FPS)
    return Fraction(rate).limit_denominator(1001)


def open_video(path: str | Path, max_frames: int | None = None, max_side: int | None = None, *,
               constant_rate: bool = True, info: MediaInfo | None = None) -> VideoStream:
    """Start decoding ``path`` (any codec ffmpeg reads) as RGB frames, at most ``max_frames`` of them.

    Rotation metadata is applied by ffmpeg, so ``width``/``height`` are the displayed size. With ``max_side``,
    larger videos are scaled down by ffmpeg (aspect kept, even sizes) so the longer side is at most that.
    With ``constant_rate`` (default) frames are resampled by their timestamps to :func:`nominal_fps` (ffmpeg's
    ``fps`` filter), which is the ``fps`` returned: ``n / fps`` seconds of frames are ``n / fps`` seconds of the
    source, also for variable-frame-rate files. ``info``: the file's :func:`probe` when the caller has it.
    """
    import imageio_ffmpeg

    filters = []
    rate = None
    if constant_rate:
        try:
            streams = (info or probe(path)).video
        except (UserFacingError, subprocess.SubprocessError, OSError):
            streams = []  # the decoder below reports what is wrong with the file
        if streams:
            rate = nominal_fps(streams[0].get("fps"), streams[0].get("tbr"))
        if rate is not None:
            filters.append(f"fps={rate.numerator}/{rate.denominator}")
    out_params = ["-frames:v", str(int(max_frames))] if max_frames else []
    if max_side:
        m = int(max_side)
        filters.append(f"scale=w='if(gt(iw,ih),min(iw,{m}),-2)':h='if(gt(iw,ih),-2,min(ih,{m}))':flags=area")
    if filters:
        out_params += ["-vf", ",".join(filters)]
    if rate is not None:
        out_params += ["-fps_mode", "passthrough"]  # the filter's frames as they are: no second resampling
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=out_params)
    try:
        meta = next(gen)
    except Exception as err:
        gen.close()
        raise UserFacingError(f"The video {Path(path).name} could not be read ({_last_line(str(err))}).") from err
    w, h = (int(v) for v in meta["size"])
    fps = float(rate) if rate is not None else (float(meta.get("fps") or 0) or 25.0)
    n = int(round((meta.get("duration") or 0) * fps)) or 1
    if max_frames:
        n = min(n, int(max_frames))

    def frames() -> Iterator[np.ndarray]:
        try:
            for buf in gen:
                yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
        except RuntimeError as err:
            raise UserFacingError(f"The video {Path(path).name} could not be decoded: {_last_line(str(err))}") from err
        finally:
            gen.close()

    return VideoStream(fps=fps, width=w, height=h, n_frames=n, frames=frames())


# ---------------------------------------------------------------------------------------------- writing
class FFmpegError(RuntimeError):
    """ffmpeg failed while encoding (a programming/environment error, not the user's)."""


class VideoWriter:
    """Pipe RGB frames into ffmpeg -> H.264 yuv420p (+ AAC audio from ``audio_path``) in one process.

    yuv420p needs even sizes: odd widths/heights are padded by repeating the last row/column (the only case
    where the output size differs from the frames', by one pixel).

    ``audio_codec="flac"`` (mp4 only): lossless audio that decodes to exactly the samples given. AAC adds an
    encoder delay (priming) and pads the end to a whole 1024-sample frame; mp4 records both, but not every
    decoder trims the end (Debian 12's ffmpeg 5.1, which Gradio's streaming output uses, keeps up to 64 ms of
    padding at 16 kHz per file), so a stream of AAC chunks grows by that much per chunk.

    ``b_frames=False`` (and always for ``ts``): decoding order = display order, so every chunk's timestamps start
    at 0 whatever its frame rate. With B-frames a chunk's decoding clock starts two frames early (-0.16 s at
    12.5 fps, -0.08 s at 25), so a 25 fps chunk after a 12.5 fps one arrived with a gap in decoding time that
    hls.js closes by moving the chunk's first frame back, over the previous chunk's last frames: the player
    dropped them (a 0.24 s hole in the buffer) and waited ~0.9 s at each change of frame rate.
    """

    def __init__(self, out_path: str | Path, width: int, height: int, fps: float, *,
                 audio_path: str | Path | None = None, fmt: str = "mp4", crf: int = 18, preset: str = "veryfast",
                 audio_bitrate: str = "128k", threads: int | None = None, start_time: float = 0.0,
                 audio_codec: str = "aac", b_frames: bool = True):
        if fmt not in ("mp4", "ts"):
            raise ValueError(f"fmt must be 'mp4' or 'ts', not {fmt!r}")
        if audio_codec not in ("aac", "flac") or (audio_codec == "flac" and fmt != "mp4"):
            raise ValueError(f"audio_codec must be 'aac' (or 'flac' in mp4), not {audio_codec!r} in {fmt}")
        self.out_path = Path(out_path)
        self.width, self.height = int(width), int(height)
        self.out_width, self.out_height = self.width + self.width % 2, self.height + self.height % 2
        self.n_frames = 0
        rate = Fraction(fps).limit_denominator(1001)
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.out_width}x{self.out_height}",
               "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0"]
        if audio_path is not None:
            cmd += ["-i", str(audio_path)]
        cmd += ["-map", "0:v:0"]
        if audio_path is not None:
            cmd += ["-map", "1:a:0"]
            cmd += ["-c:a", "aac", "-b:a", audio_bitrate] if audio_codec == "aac" else ["-c:a", "flac"]
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
        if not b_frames or fmt == "ts":
            cmd += ["-bf", "0"]
        if threads:
            cmd += ["-threads", str(threads)]
        if fmt == "mp4":
            cmd += ["-movflags", "+faststart", "-f", "mp4"]
        else:
            # timestamps continue from the previous segment so consecutive segments play back to back; no
            # B-frames: no reordering delay that would shift the first segment (and lower latency for streaming)
            # (the constant 1 s keeps every segment's timestamps positive, so ffmpeg never shifts one segment
            # alone to hide the AAC encoder's priming samples)
            cmd += ["-output_ts_offset", f"{1.0 + float(start_time):.6f}", "-f", "mpegts"]
        cmd.append(str(self.out_path))
        self.cmd = cmd
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame of shape (height, width, 3)."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a uint8 frame of shape {(self.height, self.width, 3)}, got {frame.dtype} {frame.shape}")
        if (self.out_width, self.out_height) != (self.width, self.height):
            frame = np.pad(frame, ((0, self.out_height - self.height), (0, self.out_width - self.width), (0, 0)), mode="edge")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError as err:
            raise FFmpegError(f"ffmpeg stopped while encoding: {self._stderr_tail()}") from err
        self.n_frames += 1

    def _stderr_tail(self) -> str:
        try:
            self._proc.wait(timeout=30)
            return self._proc.stderr.read().decode(errors="replace").strip()[-2000:]
        except Exception:  # pragma: no cover
            return "(no message)"

    def close(self) -> Path:
        """Finish encoding and muxing; returns the output path."""
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        err = self._proc.stderr.read().decode(errors="replace")
        code = self._proc.wait()
        if code != 0:
            raise FFmpegError(f"ffmpeg failed ({code}) writing {self.out_path.name}: {err.strip()[-2000:]}")
        return self.out_path

    def abort(self) -> None:
        """Stop ffmpeg without finishing the file (on errors)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        try:
            self.out_path.unlink(missing_ok=True)
        except OSError:  # pragma: no cover
            pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def frame_map(src_fps: float, n_src: int, n_out: int) -> np.ndarray:
    """Source frame index shown at each 25 fps timestamp k/25 (nearest-earlier, like ffmpeg's fps filter)."""
    idx = np.floor(np.arange(n_out) * (src_fps / 25) + 1e-6).astype(np.int64)
    return np.minimum(idx, max(n_src - 1, 0))


def count_frames(path: Path) -> tuple[float, int]:
    """(fps, number of decoded frames) of a video, counted by decoding it."""
    stream = open_video(path)
    n = 0
    try:
        for _ in stream.frames:
            n += 1
    finally:
        stream.close()
    return stream.fps, n
