"""Small helpers for the lessons' sentences."""


def plural(n: int, word: str) -> str:
    """``plural(1, "frame")`` -> "1 frame", ``plural(3, "frame")`` -> "3
    frames" (an "s" added, nothing cleverer)."""
    return f"{n} {word}{'s' * (n != 1)}"
