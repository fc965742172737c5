#!/usr/bin/env python3
"""Modules over MAX_MODULE lines and functions over MAX_FUNCTION lines that do not say why (issue 22).

    python .ci/sizes.py            # offenders without a reason; exit 1 when there are any
    python .ci/sizes.py --all      # every long module and function, with its reason

A reason is a line containing ``size-reason:`` at the top of the module (before its first statement after the
docstring, i.e. in the docstring or the comments under it) or at the top of the function (its docstring or a
comment on the lines before its first statement): one sentence on why splitting it would not make it clearer.
tests/test_layers.py runs this for CI.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE = 500
MAX_FUNCTION = 80
ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("app.py", "common", "services", "wav2lip384", "qa", "tts")
MARK = "size-reason:"


def _files() -> list[Path]:
    out = []
    for name in PRODUCT:
        p = ROOT / name
        out += [p] if p.is_file() else sorted(p.rglob("*.py"))
    return out


def _head(lines: list[str], first: int, body: list[ast.stmt]) -> str:
    """Source from ``first`` (1-based) up to the first statement that is not the docstring."""
    stmts = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                     and isinstance(s.value.value, str))]
    end = stmts[0].lineno - 1 if stmts else len(lines)
    return "\n".join(lines[first - 1:end])


def long_parts(path: Path) -> list[tuple[str, int, str]]:
    """[(what, lines, reason or "")] for the module and its functions over the limits."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text)
    rel = path.relative_to(ROOT).as_posix()
    out = []
    if len(lines) > MAX_MODULE:
        out.append((rel, len(lines), _reason(_head(lines, 1, tree.body))))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION:
                out.append((f"{rel}:{node.lineno} {node.name}()", n, _reason(_head(lines, node.lineno, node.body))))
    return out


def _reason(head: str) -> str:
    for line in head.splitlines():
        if MARK in line:
            return line.split(MARK, 1)[1].strip().strip('"').strip()
    return ""


def main(argv: list[str]) -> int:
    show_all = "--all" in argv
    missing = 0
    for path in _files():
        for what, n, reason in long_parts(path):
            missing += not reason
            if show_all or not reason:
                print(f"{what}: {n} lines" + (f" -- {reason}" if reason else " -- NO REASON"))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
