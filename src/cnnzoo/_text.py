"""Small wording helpers shared by every layer's messages."""

from __future__ import annotations


def count(n: int, word: str, plural: str | None = None) -> str:
    """`1 epoch`, `2 epochs`, `1,295 images`: a number with its noun in the right number.
    `plural` for the irregular ones (`count(2, "class", "classes")`)."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"
