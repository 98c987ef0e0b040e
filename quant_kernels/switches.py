"""Environment switches of the kernels (``PTQ_...`` set to 0 or 1, or to a count), read where they apply."""

from __future__ import annotations

import os
from contextlib import contextmanager


def env_choice(name: str, default: str, choices: dict[str, str]) -> str:
    """The value of the switch ``name``, one of ``choices`` (value -> meaning, in the order given; ``default`` when
    unset); any other value is a ValueError naming each choice with what it does."""
    flag = os.environ.get(name, default)
    if flag not in choices:
        raise ValueError(f"{name}={flag!r}: choose " + " or ".join(f"{value} ({meaning})"
                                                                   for value, meaning in choices.items()))
    return flag


def env_switch(name: str, default: bool, choices: dict[str, str]) -> bool:
    """Whether the switch ``name`` is on: its value "1" or "0" (``default`` when unset; ``choices`` says what each
    does, ``env_choice``)."""
    return env_choice(name, "1" if default else "0", choices) == "1"


@contextmanager
def environment(env: tuple[tuple[str, str], ...]):
    """Set these (name, value) environment variables (a benchmark mode's or sweep's switches, for its build and
    timing), then restore the caller's."""
    saved = {name: os.environ.get(name) for name, _ in env}
    os.environ.update(dict(env))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def env_count(name: str, default: int, meaning: str) -> int:
    """The whole number of at least 1 that ``name`` holds (``default`` when unset); any other value is a ValueError
    saying what it sets (``meaning``)."""
    text = os.environ.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name}={text!r}: set a whole number of at least 1, {meaning} (default {default})")
    return int(text)
