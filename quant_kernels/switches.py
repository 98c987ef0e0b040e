"""Environment switches of the kernels (``PTQ_...`` set to 0 or 1, or to a count), read where they apply."""

from __future__ import annotations

import os


def env_switch(name: str, default: bool, choices: dict[str, str]) -> bool:
    """Whether the switch ``name`` is on: its value "1" or "0" (``default`` when unset); any other value is a
    ValueError naming each choice with what it does (``choices``: value -> meaning, in the order given)."""
    flag = os.environ.get(name, "1" if default else "0")
    if flag not in ("0", "1"):
        raise ValueError(f"{name}={flag!r}: choose " + " or ".join(f"{value} ({meaning})"
                                                                   for value, meaning in choices.items()))
    return flag == "1"


def env_count(name: str, default: int, meaning: str) -> int:
    """The whole number of at least 1 that ``name`` holds (``default`` when unset); any other value is a ValueError
    saying what it sets (``meaning``)."""
    text = os.environ.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name}={text!r}: set a whole number of at least 1, {meaning} (default {default})")
    return int(text)
