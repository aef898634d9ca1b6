"""`easytrain questions` and `easytrain schema`: the spec, readable without the wizard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from easytrain import questions as Q


def default_text(q: Q.Question) -> str:
    if q.default_text:
        return q.default_text
    if q.required:
        return "required"
    return Q.format_value(q, q.default) or "empty"


def run_questions(markdown: bool = False) -> int:
    rows = [(str(i), q) for i, q in enumerate(Q.BASIC, 1)]
    rows += [(f"A{i}", q) for i, q in enumerate(Q.ADVANCED, 1)]
    if markdown:
        print("| # | key | question | allowed | default | asked when |")
        print("|---|---|---|---|---|---|")
        for number, q in rows:
            print(f"| {number} | `{q.id}` | {q.prompt} | {Q.allowed_text(q)} | {default_text(q)} | "
                  f"{q.condition_text or 'always'} |")
        return 0
    for number, q in rows:
        print(f"{number:>4}  {q.id}: {q.prompt}")
        print(f"      default: {default_text(q)}; allowed: {Q.allowed_text(q)}")
        if q.condition_text:
            print(f"      asked when: {q.condition_text}")
    print("\nA-numbered questions are advanced: asked only when you choose to change advanced settings.")
    return 0


def run_schema(write: Optional[str]) -> int:
    from easytrain.answers import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if write:
        from easytrain.fsutil import atomic_write_text

        atomic_write_text(Path(write), text)
        print(f"wrote {write}")
    else:
        print(text, end="")
    return 0
