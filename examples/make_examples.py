"""Re-create the example files in this folder (see README.md here for what each one is and its licence).

    python -m examples.make_examples

The avatar is NASA's public-domain portrait of astronaut Eileen Collins as shipped by scikit-image
(``skimage.data.astronaut()``), cropped to head and shoulders. The speech is synthesised by this project's
own TTS (``tts.TTS``, offline espeak-ng unless a better engine is configured), stored as small Ogg Vorbis.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEECH = {
    "speech_en.ogg": ("Hello, I am the public service assistant. How can I help you today?", "en"),
    "speech_zh.ogg": ("您好，我是政务服务数字人，很高兴为您服务。", "zh"),
}


def make_avatar(out: Path = HERE / "astronaut.png", side: int = 320) -> Path:
    import cv2
    from skimage import data

    img = data.astronaut()  # (512, 512, 3) RGB uint8, public domain (NASA)
    crop = img[0:400, 40:440]  # (400, 400, 3): head and shoulders, face well inside the frame
    small = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out


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


if __name__ == "__main__":
    print(make_avatar())
    make_speech()
