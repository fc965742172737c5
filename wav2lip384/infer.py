"""Command line: lip-sync a face (photo or video) to speech and print the result as JSON.

    python -m wav2lip384.infer --face F --audio A --out O.mp4 [--model ID] [--checkpoint PATH_OR_REPO]
        [--batch-size N] [--no-smooth] [--pads T B L R] [--device cpu] [--fps 25] [--passthrough-no-face]

``--model`` is a registry id: wav2lip96 (default), wav2lip256, livetalking384, paper384; ``96`` and ``384`` are
aliases of wav2lip96 and paper384. Each model gets its own crop and pads (``wav2lip384.models.registry``).
Defaults come from the environment through :class:`common.settings.Settings` (the model's weights variable,
e.g. ``DH_WAV2LIP256_CHECKPOINT``; ``DH_S3FD_CHECKPOINT``, ``DH_CACHE_DIR``, ``DH_DEVICE``,
``DH_MAX_AUDIO_SECONDS``). The output mp4 has the avatar's frame size, the speech's duration and the speech as
its audio track. Problems the user can fix are printed on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from common.cli import user_errors_exit_2
from common.errors import UserFacingError
from wav2lip384.models import registry


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wav2lip384.infer", description=__doc__.split("\n\n")[0])
    p.add_argument("--face", required=True, help="avatar: an image (jpg/png/...) or a video (mp4/mov/...)")
    p.add_argument("--audio", required=True, help="speech: wav/mp3/m4a/flac/ogg (any rate, mono or stereo)")
    p.add_argument("--out", required=True, help="output .mp4 (H.264 + AAC)")
    p.add_argument("--model", default=registry.DEFAULT_MODEL,
                   help=f"lip-sync model id: {', '.join(registry.ids())} (default {registry.DEFAULT_MODEL}; "
                        + ", ".join(f"{a} = {t}" for a, t in registry.ALIASES.items()) + ")")
    p.add_argument("--checkpoint", default=None,
                   help="generator weights: a local file/directory or a Hub spec 'owner/name[:file]' "
                        "(default: the model's variable, e.g. DH_WAV2LIP256_CHECKPOINT, else its public weights)")
    p.add_argument("--detector-checkpoint", default=None, help="S3FD weights (default: DH_S3FD_CHECKPOINT)")
    p.add_argument("--batch-size", type=int, default=None, help="frames per generator call")
    p.add_argument("--no-smooth", action="store_true", help="do not smooth face boxes over 5 frames")
    p.add_argument("--pads", type=int, nargs=4, metavar=("T", "B", "L", "R"), default=None,
                   help="grow the face box by these pixels (top bottom left right; default: the model's, 0 10 0 0)")
    p.add_argument("--fps", type=float, default=None, help="frame rate for a photo avatar (default 25)")
    p.add_argument("--device", default=None, help="torch device (default: DH_DEVICE, normally cpu)")
    p.add_argument("--passthrough-no-face", action="store_true",
                   help="leave frames without a face unchanged instead of stopping with an error")
    p.add_argument("--cache-dir", default=None, help="avatar cache directory (default: DH_CACHE_DIR)")
    return p


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from common.settings import Settings

    settings = Settings.from_env()
    spec = registry.get(args.model)  # unknown ids: a clear error listing the known ones
    checkpoint = args.checkpoint if args.checkpoint is not None else spec.weights_spec(settings)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserFacingError("--batch-size must be at least 1.")
    from pathlib import Path

    from wav2lip384.media.video import check_media
    from wav2lip384.render.pipeline import LipSyncPipeline

    # check the inputs before loading any model: a wrong path fails in a second, not after a download
    check_media(args.face, kinds=("image", "video"), what="face/avatar file")
    check_media(args.audio, kinds=("audio", "video"), what="audio file")

    pipe = LipSyncPipeline.from_pretrained(
        spec.id, checkpoint or None,
        detector_checkpoint=args.detector_checkpoint or settings.s3fd_checkpoint,
        device=args.device or settings.device, cache_dir=Path(args.cache_dir or settings.cache_dir),
        batch_size=args.batch_size, max_audio_seconds=settings.max_audio_seconds,
        on_no_face="passthrough" if args.passthrough_no_face else "error")
    result = pipe(args.face, args.audio, args.out, fps=args.fps, smooth=not args.no_smooth,
                  pads=tuple(args.pads) if args.pads else None)
    out = result.to_dict()
    # where the weights came from: source and safetensors-copy sizes, download / read / convert seconds
    out["weights_load"] = pipe.load_info.to_dict() if pipe.load_info is not None else None
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
