"""Reading settings from the environment: the one place that turns a variable's text into
a value, or refuses it.

A value that does not parse, or is out of its bounds, raises ImproperlyConfigured naming
the variable, the value and what is allowed, when the settings are loaded: a server (or a
command) then refuses to start with that one line (`load_settings_or_exit`), instead of
starting, answering `/readyz`, and failing the requests that read the setting (a rate
limit of `abc` made every authenticated request a 500; a heartbeat of 0 sent heartbeats
in a busy loop). Used by config.settings, config.serve and config.log_format (which are
read before Django's settings, so this module imports nothing of Django's but its
exception)."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
# Empty counts as off, as it always has (`SECURE_SSL_REDIRECT=` in a compose file).
_FALSE = {"0", "false", "no", "off", ""}


def invalid(name: str, value: str, allowed: str, *, secret: bool = False) -> ImproperlyConfigured:
    """The error for `name=value`; a secret's value is not repeated (the message is
    printed to the terminal and the orchestrator's log)."""
    shown = "(value not shown)" if secret else repr(value)
    return ImproperlyConfigured(f"{name}={shown} is not valid: {allowed}.")


def env_parsed(name: str, default: T, parse: Callable[[str], T], allowed: str, *, secret: bool = False) -> T:
    """`parse` applied to the variable's value (`default` when it is unset); whatever
    `parse` raises (ValueError, TypeError) becomes ImproperlyConfigured saying `allowed`."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return parse(value)
    except (ValueError, TypeError) as exc:
        raise invalid(name, value, allowed, secret=secret) from exc


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    word = value.strip().lower()
    if word not in _TRUE | _FALSE:
        raise invalid(name, value, "expected 1/true/yes/on or 0/false/no/off")
    return word in _TRUE


def _bounds(minimum: float | None, maximum: float | None, above: float | None) -> str:
    if above is not None:
        return f" above {above:g}"
    if minimum is not None and maximum is not None:
        return f" from {minimum:g} to {maximum:g}"
    return f" of at least {minimum:g}" if minimum is not None else ""


def within(value: T, *, minimum: float | None = 0, maximum: float | None = None, above: float | None = None) -> T:
    """`value` if it is a finite number within the bounds (by default: not negative), else
    ValueError; for a setting's own parser (a list of numbers, a number or empty)."""
    number = float(value)  # type: ignore[arg-type]
    if (
        not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
        or (above is not None and number <= above)
    ):
        raise ValueError(value)
    return value


def env_int(
    name: str, default: int, *, minimum: int | None = 0, maximum: int | None = None, above: int | None = None
) -> int:
    """A whole number, by default not negative."""
    allowed = "expected a whole number" + _bounds(minimum, maximum, above)
    return env_parsed(
        name, default, lambda text: within(int(text), minimum=minimum, maximum=maximum, above=above), allowed
    )


def env_float(name: str, default: float, *, minimum: float | None = 0, above: float | None = None) -> float:
    """A number of seconds (or other finite number), by default not negative."""
    allowed = "expected a number" + _bounds(minimum, None, above)
    return env_parsed(name, default, lambda text: within(float(text), minimum=minimum, above=above), allowed)


def env_choice(
    name: str, default: str, choices: tuple[str, ...], *, normalize: Callable[[str], str] = str.lower
) -> str:
    """One of `choices`, compared after `normalize` (by default any case, spaces stripped)."""

    def parse(text: str) -> str:
        chosen = normalize(text.strip())
        if chosen not in choices:
            raise ValueError(text)
        return chosen

    shown = ", ".join(repr(choice) if choice else "empty" for choice in choices)
    return env_parsed(name, default, parse, f"expected one of {shown} (any case)")


def env_list(name: str, default: str, parse: Callable[[str], T], allowed: str) -> list[T]:
    """Comma-separated values, each through `parse`; empty items are dropped."""
    return env_parsed(
        name,
        [parse(item.strip()) for item in default.split(",") if item.strip()],
        lambda text: [parse(item.strip()) for item in text.split(",") if item.strip()],
        allowed,
    )


def env_json_object(
    name: str, default: dict[str, Any], check: Callable[[dict[str, Any]], None], allowed: str
) -> dict[str, Any]:
    """A JSON object (empty text: `default`), which `check` may refuse with ValueError."""

    def parse(text: str) -> dict[str, Any]:
        if not text.strip():
            return default
        value = json.loads(text)  # json.JSONDecodeError is a ValueError
        if not isinstance(value, dict):
            raise ValueError(text)
        check(value)
        return value

    return env_parsed(name, default, parse, allowed)


def env_log_level() -> str:
    """A logging level name (DEBUG, INFO, WARNING, ERROR, CRITICAL), in any case: `debug`
    made every process fail to configure its root logger."""
    names = tuple(level for level in logging.getLevelNamesMapping() if level != "NOTSET")
    return env_choice("LOG_LEVEL", "INFO", names, normalize=str.upper)


def load_settings_or_exit(program: str) -> None:
    """Load Django's settings (DJANGO_SETTINGS_MODULE, config.settings by default), or end
    the process with one line saying which setting is wrong (exit status 2), not a
    traceback ending in it."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018  (reading one setting loads the module)
    except ImproperlyConfigured as exc:
        exit_misconfigured(program, exc)


def exit_misconfigured(program: str, error: ImproperlyConfigured) -> NoReturn:
    """End the process as a bad setting does: its one line on stderr, exit status 2."""
    print(f"{program}: configuration error: {error}", file=sys.stderr)
    sys.exit(2)
