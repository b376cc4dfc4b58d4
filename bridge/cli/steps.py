"""A checked step (what, whether it passed, what was seen, how to fix it) and how it is
printed; `check` and `token` report in steps."""

from __future__ import annotations

from dataclasses import dataclass

from bridge import log


@dataclass(frozen=True)
class Step:
    """One checked step: what, whether it passed, what was seen, and how to fix it."""

    account: str | None
    name: str
    ok: bool
    detail: str
    hint: str | None = None
    error: str | None = None  # short stable code for scripts, e.g. "AADSTS7000215", "dns"


def format_step(step: Step) -> str:
    """`ok    [home] IMAP login: ...` plus indented hint lines."""
    where = f"[{step.account}] " if step.account else ""
    lines = [f"{'ok  ' if step.ok else 'FAIL'}  {where}{step.name}: {step.detail}"]
    if step.hint:
        first, *rest = step.hint.splitlines()
        lines.append(f"      hint: {first}")
        lines += [f"            {line}" for line in rest]
    return log.redact("\n".join(lines)) + "\n"
