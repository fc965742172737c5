"""Publish trained weights: ``python -m wav2lip384.train.publish push --checkpoint C --repo OWNER/NAME``.

``C`` is a training checkpoint (``last.pt`` / ``checkpoints/step_*.pt`` of ``python -m wav2lip384.train``) or
its ``export/`` folder. The uploaded folder is exactly what the inference side loads
(``wav2lip384.weights.from_pretrained("OWNER/NAME")``, or ``DH_WAV2LIP384_CHECKPOINT=OWNER/NAME``):

    model.safetensors   weights (``weights.save_pretrained``)
    config.json         the architecture as data
    training.json       data summary, steps, last train/validation metrics (machine-readable)
    README.md           model card: data, steps, metrics, how to load, limitations

``python -m wav2lip384.train.publish stage --checkpoint C --out DIR`` writes the same folder without uploading (to check
it, or to upload by other means). Authentication is huggingface_hub's own (``huggingface-cli login`` or its
token variable). Offline, ``push`` stages the folder and then fails with a clear message saying where it is.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from common.cli import user_errors_exit_2
from common.errors import UserFacingError


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _metrics_table(row: dict | None) -> str:
    if not row:
        return "_none recorded_"
    keys = [k for k in row if k not in ("split", "time_s")]
    return "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n| " + " | ".join(_fmt(row[k]) for k in keys) + " |"


def model_card(info: dict[str, Any], config: dict[str, Any], repo_id: str, evaluation: dict | None = None) -> str:
    """README.md text with YAML front matter, from ``training.json`` + ``config.json`` (+ evaluate JSON)."""
    task = info.get("task", config.get("kind", "model"))
    kind = config.get("kind", task)
    size = config.get("img_size")
    data = info.get("data_summary", {})
    tr, va = data.get("train", {}), data.get("val", {})
    what = {"generator": f"Wav2Lip generator, {size}x{size} faces"
                         + (" (the architecture of the paper's appendices 2-3)" if size == 384 else ""),
            "syncnet": f"SyncNet lip-sync expert for {size}x{size} faces (Wav2Lip colour SyncNet"
                       + (", face encoder of the paper's appendix 1)" if size == 384 else ")")}.get(kind, kind)
    env = "DH_WAV2LIP384_CHECKPOINT" if size == 384 else "DH_WAV2LIP96_CHECKPOINT"
    lines = [
        "---",
        "library_name: pytorch",
        "tags:",
        "- lip-sync",
        "- wav2lip",
        "- talking-head",
        f"- {kind}",
        "---",
        "",
        f"# {repo_id}",
        "",
        f"{what}, trained with `python -m wav2lip384.train {task}` of the digital-human-384 project.",
        "",
        "## Training data",
        "",
        f"- Preprocessed with `python -m wav2lip384.train.preprocess` at {data.get('size', '?')} px, {data.get('fps', 25)} fps "
        f"(sentence clips, paper bottom-edge square face crops, 16 kHz mono audio).",
        f"- Train: {tr.get('clips', '?')} clips, {tr.get('frames', '?')} frames "
        f"({(tr.get('frames') or 0) / 25:.1f} s) from {len(tr.get('sources', []))} source videos.",
        f"- Validation (other source videos): {va.get('clips', '?')} clips, {va.get('frames', '?')} frames "
        f"from {len(va.get('sources', []))} source videos.",
    ]
    if "unavailable" in data:
        lines.append(f"- Data summary unavailable: {data['unavailable']}")
    tcfg = info.get("train_config", {})
    lines += [
        "",
        "## Training",
        "",
        f"- Optimizer steps: {info.get('steps', info.get('step', '?'))}"
        + (f", batch {tcfg.get('batch_size')} per process x {info.get('world_size', 1)} process(es)" if tcfg else ""),
    ]
    if task == "generator":
        lines.append(f"- Expert SyncNet: `{info.get('expert_syncnet', '?')}`; GAN loss: {info.get('gan', '?')}; "
                     f"sync loss switched on: {info.get('sync_enabled', '?')}")
    lines += ["", "Last training metrics:", "", _metrics_table(info.get("last_train")), "",
              "Last validation metrics:", "", _metrics_table(info.get("last_val")), ""]
    if task == "syncnet" and info.get("last_val"):
        v = info["last_val"].get("loss")
        if isinstance(v, float):
            lines += [f"Validation BCE {v:.4f} vs chance {0.6931:.4f} (always answering 0.5): "
                      + ("below chance." if v < 0.6931 else "NOT below chance: this expert has not learned sync "
                         "that transfers to unseen speakers."), ""]
    if evaluation:
        lines += ["## Evaluation", "", "```json", json.dumps(evaluation, indent=1)[:6000], "```", ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from wav2lip384.weights import from_pretrained",
        f"model = from_pretrained(\"{repo_id}\")",
        "```",
        "",
        (f"or set `{env}={repo_id}` for the app and `python -m wav2lip384.infer`." if kind == "generator" else
         f"or use it as the expert of `python -m wav2lip384.train generator --syncnet {repo_id}` "
         f"(download the folder first) and as `--project-syncnet` of `python -m wav2lip384.evaluate`."),
        "",
        "## Limitations",
        "",
        "Metrics above are from the training run itself on the data described; a small dataset (few speakers) "
        "does not generalise. Check lip-sync with `python -m wav2lip384.evaluate` before relying on it.",
        "",
    ]
    return "\n".join(lines)


TRAINING_INFO = "training.json"  # written beside an export/ folder by `python -m wav2lip384.train`


def data_summary(data_dir: str | Path) -> dict[str, Any]:
    """Clip/frame counts per split of a preprocessed dataset, read from the ``manifest.json`` that
    ``python -m wav2lip384.train.preprocess`` writes (read here so publishing needs nothing of the trainers)."""
    try:
        m = json.loads((Path(data_dir).resolve() / "manifest.json").read_text(encoding="utf-8"))
        out: dict[str, Any] = {"size": m["size"], "fps": m.get("fps", 25)}
        for split in ("train", "val"):
            clips = [c for c in m["clips"] if c["split"] == split]
            out[split] = {"clips": len(clips), "frames": sum(int(c["n_frames"]) for c in clips),
                          "sources": sorted({c["source"] for c in clips})}
        return out
    except Exception as err:  # data moved since training: say so in the card instead of failing
        return {"unavailable": f"{data_dir}: {type(err).__name__}: {err}"}


def stage(checkpoint: str | Path, out: str | Path, repo_id: str = "OWNER/NAME",
          evaluation: dict | None = None) -> Path:
    """Write the folder ``push`` would upload into ``out``; returns it."""
    from wav2lip384 import weights
    from wav2lip384.weights import model_from_checkpoint

    src = Path(checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if src.is_file():
        model, ck = model_from_checkpoint(src)
        weights.save_pretrained(model, out)
        tcfg = ck["task_config"]
        info = {"task": ck["task"], "steps": ck["step"], "world_size": ck["world_size"],
                "train_config": ck["train_config"], "task_config": tcfg, "data": tcfg.get("data"),
                "data_summary": data_summary(tcfg.get("data", "")), "last_train": ck["last_train"],
                "last_val": ck["last_val"], "checkpoint": str(src)}
        if ck["task"] == "generator":
            info |= {"expert_syncnet": tcfg.get("syncnet"), "gan": tcfg.get("gan"),
                     "sync_enabled": ck["task_state"].get("sync_enabled")}
    elif src.is_dir():
        if not (src / weights.WEIGHTS_NAME).is_file() or not (src / weights.CONFIG_NAME).is_file():
            raise UserFacingError(f"{src} has no {weights.WEIGHTS_NAME} + {weights.CONFIG_NAME}: pass a training "
                                  "checkpoint (last.pt) or the export/ folder of `python -m wav2lip384.train`")
        model = weights.from_pretrained(src)  # validates the folder before anything is published
        weights.save_pretrained(model, out)
        info_path = src / TRAINING_INFO
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        hist = info.get("history_tail", [])
        info.setdefault("last_train", next((r for r in reversed(hist) if r.get("split") == "train"), None))
        info.setdefault("last_val", next((r for r in reversed(hist) if r.get("split") == "val"), None))
    else:
        raise UserFacingError(f"--checkpoint {src}: no such file or folder")
    (out / TRAINING_INFO).write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
    config = json.loads((out / weights.CONFIG_NAME).read_text(encoding="utf-8"))
    (out / "README.md").write_text(model_card(info, config, repo_id, evaluation), encoding="utf-8")
    return out


def push(checkpoint: str | Path, repo_id: str, *, private: bool = False, evaluation: dict | None = None,
         staging_parent: str | Path | None = None, commit_message: str | None = None) -> dict[str, Any]:
    """Stage the folder and upload it to ``repo_id`` (created if needed) with huggingface_hub's HfApi."""
    from common.hub import hub_reachable

    if repo_id.count("/") != 1 or any(not part for part in repo_id.split("/")):
        raise UserFacingError(f"--repo {repo_id!r}: expected 'owner/name'")
    staged = Path(tempfile.mkdtemp(prefix="wav2lip384-push-", dir=staging_parent))
    stage(checkpoint, staged, repo_id, evaluation)
    if not hub_reachable():
        raise UserFacingError(f"the Hugging Face Hub is not reachable from here, nothing was uploaded. The folder "
                              f"that would be pushed is ready at {staged}; run the command again when online.")
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(staged),
                                 commit_message=commit_message or f"Upload {json.loads((staged / 'training.json').read_text())['task']} weights")
    except Exception as err:  # auth, permissions, network: say which, keep the staged folder
        raise UserFacingError(f"upload to {repo_id} failed ({type(err).__name__}: {err}). Log in with "
                              f"`huggingface-cli login` if needed. The staged folder is at {staged}.") from err
    return {"repo": repo_id, "url": str(url), "commit": getattr(info, "oid", None) or str(info),
            "files": sorted(p.name for p in staged.iterdir()), "staged": str(staged)}


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wav2lip384.train.publish", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("push", "stage"):
        s = sub.add_parser(name)
        s.add_argument("--checkpoint", required=True, help="training checkpoint (.pt) or its export/ folder")
        s.add_argument("--repo", required=name == "push", default="OWNER/NAME", help="Hub repo 'owner/name'")
        s.add_argument("--eval-json", default=None, help="output of `python -m wav2lip384.evaluate --json` for the card")
        if name == "push":
            s.add_argument("--private", action="store_true")
        else:
            s.add_argument("--out", required=True)
    args = p.parse_args(argv)
    evaluation = json.loads(Path(args.eval_json).read_text(encoding="utf-8")) if args.eval_json else None
    if args.cmd == "stage":
        out = stage(args.checkpoint, args.out, args.repo, evaluation)
        result = {"staged": str(out), "files": sorted(f.name for f in out.iterdir())}
    else:
        result = push(args.checkpoint, args.repo, private=args.private, evaluation=evaluation)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
