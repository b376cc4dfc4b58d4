"""'Did you mean' for a mistyped name: the close choices, and the phrase naming them."""

from __future__ import annotations

import difflib
from collections.abc import Collection


def close_matches(word: str, choices: Collection[str], *, most: int = 1) -> list[str]:
    """Up to `most` choices close to `word`, best first; case is ignored in the comparison,
    the choices come back as spelt."""
    by_folded = {choice.casefold(): choice for choice in sorted(choices)}
    found = difflib.get_close_matches(word.casefold(), list(by_folded), n=most, cutoff=0.6)
    return [by_folded[name] for name in found]


def did_you_mean(word: str, choices: Collection[str], *, most: int = 1) -> str:
    """"did you mean 'a' or 'b'?" for the close choices, '' when none is close."""
    close = close_matches(word, choices, most=most)
    return f"did you mean {' or '.join(map(repr, close))}?" if close else ""
