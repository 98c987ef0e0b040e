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


def env_count(name: str, default: int, most: int, meaning: str) -> int:
    """The count ``name`` holds (``default`` when unset): a whole number from 0 to ``most``; anything else is a
    ValueError that says what the count is (``meaning``) and its range."""
    value = os.environ.get(name, str(default))
    if not value.isdigit() or int(value) > most:
        raise ValueError(f"{name}={value!r}: set it to {meaning}, a whole number from 0 to {most}")
    return int(value)
