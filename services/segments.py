"""A streamed answer's HLS segments, made here so that the player can be handed them as they are.

Gradio's streaming video output turns every chunk it is given into an MPEG-TS segment itself: it probes the chunk
(ffprobe), decodes its audio (ffmpeg), feeds that to a running AAC encoder and muxes video and AAC into a segment
(ffmpeg again). Three processes a chunk, 0.26 s on an idle bf16 2-core EPYC (0.45 s on an AVX2-only one), paid
once before the first frame can play and again for every chunk while nothing renders (issue 20).

Here the answer's speech, all of which is known before the first chunk renders, is encoded to AAC once, on a
worker thread, while that chunk renders. Each chunk then becomes a segment in one ``-c copy`` remux (0.07 s): its
H.264 video and the AAC frames of its time span, placed on the stream's timeline. One AAC stream for the whole
answer: no encoder priming or padding between chunks, so the answer plays exactly as long as its speech.

The timeline: ffmpeg's AAC encoder starts with one frame of priming (``AAC_DELAY`` samples), so the stream's
frame ``j`` carries the speech's samples from ``(j - 1) * 1024``. A segment takes the frames that end within its
video (all that are left for the last one), so its audio starts at most one frame (64 ms at 16 kHz) before its
video; the remux keeps the audio's own zero and moves the video by that much (an ADTS input placed by an offset
keeps the times of the frames ffmpeg reads while probing), and lifts both to the stream's place.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

AAC_DELAY = 1024  # samples of priming ffmpeg's AAC encoder puts before the first sample of a stream
AAC_FRAME = 1024  # samples in one AAC-LC frame
AAC_BITRATE = "64k"  # mono speech at 16 kHz
PTS_BASE_S = 10.0  # where the stream's timeline starts: MPEG-TS holds no negative time, and frame 0 is at -64 ms
TS_PACKET = 188
TS_NULL_PID = 0x1FFF
VIDEO_PID, AUDIO_PID = 256, 257  # fixed for every segment: a player keeps the tracks of the first one


@dataclass(frozen=True)
class Segment:
    """One MPEG-TS segment of a streamed answer, ready to serve, and its video's length (the playlist's entry)."""

    path: Path
    seconds: float


class AnswerSegments:
    """Turns a streamed answer's chunks (mp4: H.264 without B-frames, at any audio) into HLS segments with the
    answer's own audio, ``speech`` (mono float samples at ``sample_rate``), in the order they play.

    ``add(chunk, seconds)`` for each chunk: ``seconds`` is its video's length (its frames over their rate), so
    each segment's video starts where the last one's ended. A chunk's speech may end up to half a frame off its
    video (the chunks' frames follow the speech so far, so that never adds up): the audio frames are cut on the
    video's time, and the last segment takes all that are left."""

    def __init__(self, speech: np.ndarray, sample_rate: int, work_dir: str | Path):
        from wav2lip384.media.video import ffmpeg_exe

        self.sample_rate = int(sample_rate)
        self.work = Path(work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self._ffmpeg = ffmpeg_exe()
        self._speech = np.ascontiguousarray(np.clip(np.asarray(speech, np.float32).reshape(-1), -1.0, 1.0))
        self._frames: list[bytes] | None = None
        self._error: BaseException | None = None
        self._next = 0  # the first AAC frame no segment has taken yet
        self._start_s = 0.0  # where the next segment's video starts on the answer's timeline
        self._counters: dict[int, int] = {}  # MPEG-TS continuity counters, continued from segment to segment
        self._count = 0
        self._encoded = threading.Thread(target=self._encode, name="segments-aac", daemon=True)
        self._encoded.start()

    def _encode(self) -> None:
        try:
            cmd = [self._ffmpeg, "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(self.sample_rate), "-ac", "1",
                   "-i", "pipe:0", "-c:a", "aac", "-b:a", AAC_BITRATE, "-f", "adts", "pipe:1"]
            proc = subprocess.run(cmd, input=self._speech.tobytes(), capture_output=True, timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"encoding the answer's audio failed: {proc.stderr.decode(errors='replace')[-300:]}")
            self._frames = adts_frames(proc.stdout)
        except BaseException as err:  # handed to the caller of add()
            self._error = err

    @property
    def frame_s(self) -> float:
        return AAC_FRAME / self.sample_rate

    def frame_start_s(self, j: int) -> float:
        """Where AAC frame ``j``'s samples start in the speech (frame 0 is the encoder's priming: negative)."""
        return (j * AAC_FRAME - AAC_DELAY) / self.sample_rate

    def add(self, chunk: str | Path, seconds: float, last: bool = False) -> Segment:
        """The next segment: ``chunk``'s video at its place on the timeline with the audio frames that end within
        it (``last``: all that are left)."""
        self._encoded.join()
        if self._error is not None:
            raise RuntimeError(str(self._error)) from self._error
        frames = self._frames
        start, end = self._start_s, self._start_s + float(seconds)
        first = stop = self._next
        if last:
            stop = len(frames)
        else:
            while stop < len(frames) and self.frame_start_s(stop) + self.frame_s <= end + 1e-9:
                stop += 1
            if stop == first and stop < len(frames):  # a chunk shorter than a frame still carries one
                stop += 1
        if stop == first:
            raise RuntimeError("a streamed segment without audio: the answer's speech is shorter than its video")
        audio_s = self.frame_start_s(first)  # <= start: this frame's predecessor ended at or before it
        path = self.work / f"segment_{self._count:04d}.ts"
        cmd = [self._ffmpeg, "-nostdin", "-v", "error", "-y", "-copyts",
               "-f", "aac", "-i", "pipe:0",
               "-itsoffset", f"{start - audio_s:.6f}", "-i", str(chunk),
               "-map", "1:v:0", "-map", "0:a:0", "-c", "copy", "-bsf:v", "h264_mp4toannexb",
               "-streamid", f"0:{VIDEO_PID}", "-streamid", f"1:{AUDIO_PID}",
               "-output_ts_offset", f"{PTS_BASE_S + audio_s:.6f}", "-muxdelay", "0", "-muxpreload", "0",
               "-f", "mpegts", str(path)]
        proc = subprocess.run(cmd, input=b"".join(frames[first:stop]), capture_output=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"making stream segment {self._count} failed: "
                               f"{proc.stderr.decode(errors='replace')[-300:]}")
        path.write_bytes(continue_counters(path.read_bytes(), self._counters))
        self._next, self._start_s = stop, end
        self._count += 1
        return Segment(path, float(seconds))


def adts_frames(data: bytes) -> list[bytes]:
    """The frames of an ADTS stream (each with its 7- or 9-byte header), in order."""
    frames, at = [], 0
    while at + 7 <= len(data):
        if data[at] != 0xFF or (data[at + 1] & 0xF0) != 0xF0:
            raise ValueError(f"not an ADTS frame at byte {at}")
        length = ((data[at + 3] & 0x03) << 11) | (data[at + 4] << 3) | (data[at + 5] >> 5)
        if length < 7 or at + length > len(data):
            raise ValueError(f"a truncated ADTS frame at byte {at}")
        frames.append(data[at:at + length])
        at += length
    return frames


def continue_counters(data: bytes, counters: dict[int, int]) -> bytes:
    """``data`` (whole MPEG-TS packets) with each PID's 4-bit continuity counter continuing from ``counters``
    (updated in place): every segment is muxed by its own ffmpeg, which starts them at 0, and a player that
    checks them reads a jump as lost packets."""
    if len(data) % TS_PACKET:
        raise ValueError("not whole MPEG-TS packets")
    out = bytearray(data)
    for at in range(0, len(out), TS_PACKET):
        if out[at] != 0x47:
            raise ValueError(f"no MPEG-TS sync byte at {at}")
        pid = ((out[at + 1] & 0x1F) << 8) | out[at + 2]
        if pid == TS_NULL_PID:
            continue
        value = counters.get(pid, 0)
        out[at + 3] = (out[at + 3] & 0xF0) | value
        if out[at + 3] & 0x10:  # the counter moves on only for a packet with a payload
            counters[pid] = (value + 1) & 0x0F
    return bytes(out)
