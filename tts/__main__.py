"""Command line: ``python -m tts say|engines|bench``. Prints JSON; user errors go to stderr with exit status 2.

    python -m tts say "您好，请问有什么可以帮您？" --out x.wav [--lang zh|en] [--engine NAME] [--lipsync-out y.wav]
    python -m tts engines --json
    python -m tts bench --json [--engine NAME ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from common.cli import user_errors_exit_2

BENCH_TEXT = {
    "zh": "您好，欢迎来到政务服务中心。办理社保卡需要携带身份证原件，一般三至五个工作日可以领取。"
          "如有疑问，请拨打12345政务服务热线。",
    "en": "Hello, and welcome to the public service centre. To apply for a social security card, please bring "
          "your identity card. It is usually ready in three to five working days.",
}


def _make_tts(args):
    from common.settings import Settings
    from tts import TTS

    return TTS.from_settings(Settings.from_env())


def _say(args) -> dict:
    import soundfile as sf

    from tts import to_lipsync_audio

    t = _make_tts(args)
    sp = t.synthesize(args.text, lang=args.lang, engine=args.engine)
    out = {"engine": sp.engine, "lang": sp.lang, "sample_rate": sp.sample_rate, "duration_s": round(sp.duration_s, 3),
           "seconds_spent": round(sp.seconds_spent, 3), "rtf": round(sp.rtf, 4),
           "sentences": sp.extra.get("sentences", 1), "normalized": sp.extra.get("normalized", ""),
           "peak": round(float(abs(sp.wave).max()), 4) if len(sp.wave) else 0.0}
    if args.out:
        sf.write(args.out, sp.wave, sp.sample_rate, subtype="PCM_16")
        out["out"] = os.path.abspath(args.out)
    if args.lipsync_out:
        sf.write(args.lipsync_out, to_lipsync_audio(sp.wave, sp.sample_rate), 16000, subtype="FLOAT")
        out["lipsync_out"] = os.path.abspath(args.lipsync_out)
    return out


def _engines(args) -> list[dict]:
    return [s.as_dict() for s in _make_tts(args).engines(refresh=True)]


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _bench(args) -> dict:
    t = _make_tts(args)
    statuses = t.engines(refresh=True)
    wanted = set(args.engine or [])
    result: dict = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(),
                    "repeats": args.repeats, "engines": {}}
    for st in statuses:
        if wanted and st.name not in wanted:
            continue
        if not st.available:
            result["engines"][st.name] = {"available": False, "reason": st.reason}
            continue
        entry: dict = {"available": True}
        t0 = time.perf_counter()
        t.synthesize("你好。" if "zh" in st.languages else "Hello.", engine=st.name)  # load / warm up
        entry["first_call_s"] = round(time.perf_counter() - t0, 3)
        for lang in st.languages:
            audio = spent = 0.0
            for _ in range(args.repeats):
                sp = t.synthesize(BENCH_TEXT[lang], lang=lang, engine=st.name)
                audio += sp.duration_s
                spent += sp.seconds_spent
            entry[lang] = {"chars": len(BENCH_TEXT[lang]), "audio_s": round(audio / args.repeats, 3),
                           "compute_s": round(spent / args.repeats, 4), "rtf": round(spent / max(audio, 1e-9), 4)}
        result["engines"][st.name] = entry
    result["offline_default"] = t.active_engine("zh")
    return result


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tts", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    say = sub.add_parser("say", help="synthesise text to a WAV file")
    say.add_argument("text")
    say.add_argument("--lang", choices=["zh", "en"], default=None, help="default: detect")
    say.add_argument("--engine", default=None, help="auto | gpt_sovits | neural | espeak (default: DH_TTS_ENGINE)")
    say.add_argument("--out", default=None, help="WAV at the engine's native rate")
    say.add_argument("--lipsync-out", default=None, help="also write the 16 kHz lip-sync audio here")
    eng = sub.add_parser("engines", help="list engines and whether they are available")
    eng.add_argument("--json", action="store_true")
    bench = sub.add_parser("bench", help="real-time factor of each available engine on this CPU")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--engine", action="append", help="only this engine (repeatable)")
    bench.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.cmd == "say":
        res = _say(args)
    elif args.cmd == "engines":
        res = _engines(args)
        if not args.json:
            for e in res:
                print(f"{e['name']:<11} {'yes' if e['available'] else 'no ':<4} {','.join(e['languages']):<6} {e['reason']}")
            return 0
    else:
        res = _bench(args)
    print(json.dumps(res, ensure_ascii=False, indent=None if args.cmd == "say" else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
