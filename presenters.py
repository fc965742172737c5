"""How the app's results read on the page: the services' typed results -> markdown for the visitor.

Presentation only (markdown, symbols); imported by app.py and nothing below it. What the results mean and where they
come from is in ``services/`` (:mod:`services.results`, :mod:`services.status`, :mod:`services.scores`).
"""

from __future__ import annotations

from services.results import StatusItem, VideoResult
from services.scores import ScoresReport


def video_summary(res: VideoResult) -> str:
    """Plain words for the result line under a video."""
    if res.path is None:
        return f"🔈 Speech only. {res.notice}".strip()
    parts = [f"**{res.model_title}** ({res.img_size}×{res.img_size} mouth)",
             f"{res.seconds:.1f} s to make {res.duration_s:.1f} s of video",
             f"{res.render_fps:.1f} frames per second"]
    if res.clarity is not None:
        parts.append(f"mouth sharpness {res.clarity:.0f} (higher is sharper)")
    if res.engine:
        parts.append(f"voice: {res.engine}")
    text = " · ".join(parts)
    if res.warnings:
        text += "\n\n" + "\n".join(f"⚠️ {w}" for w in res.warnings)
    return text


def status_markdown(items: list[StatusItem]) -> str:
    """A short table a visitor can read: part, state, what to do."""
    rows = []
    for it in items:
        state = f"✓ {it.active}" if it.ok else f"⚠ {it.active}"  # plain symbols: present in every font
        rows.append(f"| {it.part} | {state} | {it.fix or '—'} |")
    return "| part | state | what to do |\n|---|---|---|\n" + "\n".join(rows)


def details_markdown(items: list[StatusItem]) -> str:
    return "\n".join(f"- **{it.part}**: {it.details}" for it in items if it.details)


def scores_markdown(report: ScoresReport) -> str:
    """A table a visitor reads: one row per model, the direction of each figure in its header."""
    if not report.rows:
        return ""
    cols = ["Model"]
    if report.syncnet_ok:
        cols += ["Lip-sync distance (lower is better)", "Lip-sync confidence (higher is better)",
                 "Audio–video offset"]
    cols += ["Mouth sharpness (higher is sharper)", "Mouth motion in pauses (lower is stiller)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in report.rows:
        cells = [f"**{r.title}**"]
        if report.syncnet_ok:
            cells += [_num(r.lse_d, 2), _num(r.lse_c, 2), _offset(r.av_offset)]
        cells += [_num(r.sharpness, 0), _num(r.pause_motion, 2) if r.pause_motion is not None
                  else ("no pause in the speech" if r.sharpness is not None else "—")]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"{r.title}: {r.note}" for r in report.rows if r.note]
    text = "\n".join(lines)
    if report.notice:
        text += f"\n\n{report.notice}"
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    if report.syncnet_ok:
        text += ("\n\n*Lip-sync distance and confidence are LSE-D and LSE-C, measured as lip-sync papers do "
                 "(SyncNet, syncnet_python's protocol); an offset of 0 frames means sound and lips are in step.*")
        if any(r.short_clip for r in report.rows):
            text += " *Clips under 4 s give noisier lip-sync figures.*"
    return text


def _num(x: float | None, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _offset(frames: int | None) -> str:
    if frames is None:
        return "—"
    return "0 frames (in step)" if frames == 0 else f"{frames:+d} frames ({abs(frames) * 40} ms)"
