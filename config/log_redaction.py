"""Keeping credentials out of every log line the server writes.

Partner websockets may carry their key as `?api_key=…`, and uvicorn's websocket and
access lines print the path with its query string; a token can also reach a message
through an exception or a header dump. `RedactCredentials` is a logging filter set on
every handler (Django's in config.settings.LOGGING, uvicorn's in config.serve), so a
record is cleaned whichever logger wrote it. It rewrites the record's message and its
string arguments in place, keeping the arguments a formatter may read by position
(uvicorn's access formatter unpacks them)."""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[REDACTED]"

# Query parameters (and form fields) whose value is a credential.
_CREDENTIAL_PARAMS = (
    "api_key|apikey|api-key|key|token|access_token|refresh_token|id_token|auth|authorization"
    "|password|passwd|secret|client_secret|session|sessionid|csrftoken|signature|sig"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # ?api_key=…&token=… in a URL, also percent-encoded once (a logged, quoted URL).
    (re.compile(rf"(?i)((?:[?&;]|%3F|%26)(?:{_CREDENTIAL_PARAMS})(?:=|%3D))[^&;\s\"'#]*"), rf"\1{REDACTED}"),
    # "Authorization: Bearer …", "ApiKey …", "Basic …" anywhere in a message.
    (re.compile(r"(?i)\b(bearer|apikey|basic)(\s+|%20)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{REDACTED}"),
    # X-API-Key: … headers and key=value pairs in our own structured lines.
    (re.compile(r"(?i)\b(x-api-key|api_key|token|secret|password)(\s*[:=]\s*)[^\s,;&\"']{6,}"), rf"\1\2{REDACTED}"),
    # A JWT on its own (three base64url parts, the first a JSON header).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    # A partner API key on its own, `tk_<prefix>_<secret>` (tenants.services.create_api_key;
    # `tk` is API_KEY_PREFIX), in a path, a message, anywhere: the prefix, which names the
    # key in the admin, is kept.
    (re.compile(r"\b(tk_[A-Za-z0-9]{1,16}_)[A-Za-z0-9_-]{16,}"), rf"\1{REDACTED}"),
    # A Cookie or Set-Cookie header line: all of its value, whatever cookies it holds.
    (re.compile(r"(?i)\b((?:set-)?cookie)(\s*:\s*)[^\r\n]+"), rf"\1\2{REDACTED}"),
    # ... and as a repr: ('cookie', '…'), (b'cookie', b'…'), {'cookie': '…'}.
    (re.compile(r"""(?i)(['"](?:set-)?cookie['"]\s*[:,]\s*b?)(['"])[^'"]*"""), rf"\1\2{REDACTED}"),
    # The session and CSRF cookies' values wherever they appear (`; sessionid=…` in a
    # header dump, `sessionid = …`, `'csrftoken': '…'`).
    (
        re.compile(r"""(?i)\b(sessionid|csrftoken|csrfmiddlewaretoken)(\s*=\s*|['"]?\s*:\s*b?['"]?)[^;&\s"',]+"""),
        rf"\1\2{REDACTED}",
    ),
)

# Headers whose whole value is a credential: a logger that passes a header's name and value
# as separate arguments (`"< %s: %s", name, value`: the websockets library at DEBUG) has
# its value replaced, as a header line's would be.
_CREDENTIAL_HEADERS = frozenset({"cookie", "set-cookie", "authorization", "proxy-authorization", "x-api-key"})


def redact(text: str) -> str:
    """`text` with every credential it carries replaced by [REDACTED]."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def _redact_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    cleaned: list[Any] = []
    previous: Any = None
    for arg in args:
        name = previous.decode("latin-1") if isinstance(previous, bytes) else previous
        if isinstance(arg, str | bytes) and isinstance(name, str) and name.strip().lower() in _CREDENTIAL_HEADERS:
            cleaned.append(REDACTED)
        else:
            cleaned.append(_redact_value(arg))
        previous = arg
    return tuple(cleaned)


class RedactCredentials(logging.Filter):
    """Rewrites credentials out of a record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = _redact_args(record.args)
        elif isinstance(record.args, dict):
            record.args = {name: _redact_value(value) for name, value in record.args.items()}
        if record.exc_info and not record.exc_text:
            # Format the traceback now, so the text the handler prints is the cleaned one.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
