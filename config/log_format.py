"""How log lines look: one JSON object per line in production, readable text in
development (docs/operations.md, "Logs").

`log_format()` decides from the environment alone (`LOG_FORMAT=json|text`, else JSON when
DEBUG is off), because the server's own logging (config.serve) is set up before Django's
settings are loaded. `RequestContextFilter` puts the current request's id, tenant, caller,
route and method on every record (core.request_context), whoever logs it.
`JsonFormatter` writes those fields, and the `key=value` pairs of our own
`event=… key=…` messages, as JSON fields."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from config.env import env_bool, env_choice

# What a record may carry from core.request_context, in the order they are written.
CONTEXT_FIELDS = ("request_id", "tenant", "user", "key", "route", "method", "status", "duration_ms")
# `event=stream_open kind=list conn=…`: our structured messages.
_PAIR = re.compile(r"(\w+)=(\S*)")
_STRUCTURED = re.compile(r"^event=\S+(?: \w+=\S*)*$")


def log_format() -> str:
    """`json` or `text`."""
    chosen = env_choice("LOG_FORMAT", "", ("", "json", "text"))
    if chosen:
        return chosen
    return "text" if env_bool("DEBUG") else "json"


class RequestContextFilter(logging.Filter):
    """Copies the current request's context onto the record (never replaces a field the
    caller set with `extra=`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from core.request_context import current_context

        context = current_context()
        if context is not None:
            for name, value in context.log_fields().items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


class UncaughtExceptionsOnly(logging.Filter):
    """On `django.request`: only the records of an exception nobody handled (they carry
    its traceback). Django also logs every 4xx and 5xx response there ("Bad Request: …",
    "Service Unavailable: /readyz" at ERROR during an expected outage), a second line for
    a request whose `event=request` line (core.request_context) already says its status;
    an exception on /api/ and /v2/ is logged once by core.errors and answered, so Django
    sees only its response."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is not None


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the request context, the
    message's own `key=value` pairs, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        if _STRUCTURED.match(message):
            for key, value in _PAIR.findall(message):
                data.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level=… logger=… message`, then the request context as key=value pairs."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        message = record.getMessage()
        values = ((name, getattr(record, name, None)) for name in CONTEXT_FIELDS)
        # What the message already says (`event=request route=…`) is not repeated.
        pairs = [f"{name}={value}" for name, value in values if value is not None and f"{name}=" not in message]
        if not pairs:
            return line
        head, newline, rest = line.partition("\n")  # keep a traceback below the line
        return f"{head} {' '.join(pairs)}{newline}{rest}"


def formatter_config() -> dict[str, Any]:
    """The logging dictConfig entry of the chosen formatter."""
    return {"()": JsonFormatter if log_format() == "json" else TextFormatter}
