"""Reading untrusted JSON: request bodies (the DRF parser and the stream views), JSON in a
query parameter, and partner websocket messages all go through `load_json`, so a value
Python or PostgreSQL cannot hold is refused as `400 INVALID_JSON` (websocket: close 4400)
before any code looks at it:

- not UTF-8, or not JSON at all (also `NaN`, `Infinity`: not JSON, and not storable);
- a number that is not finite once parsed (`1e400`) or an integer too long for Python
  to parse (its digit limit), either of which fails later in validation or rendering;
- nesting deeper than `MAX_JSON_DEPTH`: json's C parser recurses, and 5,000 levels end
  in a RecursionError; nothing the API takes is more than a few levels deep;
- a string or key with a lone UTF-16 surrogate (`"\\ud800"`): it has no UTF-8 encoding,
  so PostgreSQL (and the JSON renderer) would fail on it;
- a key repeated in one object (`{"priority": "bogus", "priority": "high"}`), at any
  depth: Python keeps the last one, a proxy or gateway in front may read the first, so
  the request it checked would not be the request that runs.

Bodies are also held to `DATA_UPLOAD_MAX_MEMORY_SIZE` (`413 PAYLOAD_TOO_LARGE`): DRF reads
the request stream itself and so skips Django's own check."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from rest_framework.parsers import BaseParser
from rest_framework.utils.mediatypes import media_type_matches

from core.http import ApiError

MAX_JSON_DEPTH = 64

_NOT_GIVEN = object()


def invalid_json(message: str) -> ApiError:
    return ApiError(400, "INVALID_JSON", message)


def payload_too_large() -> ApiError:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"The request body is larger than {limit} bytes.", {"limit": limit})


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large a number")
    return value


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) < len(pairs):
        repeated = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise invalid_json(f"The JSON repeats the key {_quoted(repeated)} in one object; each key may appear once.")
    return value


def _quoted(key: str) -> str:
    # Escaped to ASCII and cut short: the key may hold a lone surrogate or control
    # characters, and the message goes into a response body and a websocket close reason.
    return json.dumps(key if len(key) <= 60 else key[:60] + "...")


def load_json(data: str | bytes | bytearray) -> Any:
    """Parse `data` as JSON the API can take, or raise `400 INVALID_JSON` saying why."""
    if isinstance(data, bytes | bytearray):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_json("The JSON is not UTF-8 text.") from None
    try:
        value = json.loads(
            data,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_object_without_repeated_keys,
        )
    except RecursionError:
        raise invalid_json(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.") from None
    except json.JSONDecodeError as error:
        raise invalid_json(f"This is not valid JSON: {error.msg} at character {error.pos}.") from None
    except ValueError:  # NaN / Infinity, 1e400, integers beyond Python's digit limit
        raise invalid_json("The JSON holds NaN, Infinity or a number too large to take.") from None
    _check_value(value)
    return value


def _check_value(value: Any) -> None:
    """Depth and lone surrogates, walked without recursion (the value may be deep)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise invalid_json(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    pending.append((child, depth + 1))
            else:
                pending.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid_json("A string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text.") from None


def read_json_body(request: HttpRequest, default: Any = _NOT_GIVEN) -> Any:
    """The request's JSON body (for views that are not DRF views: the streams); `default`
    when the body is empty and a default is given."""
    try:
        body = request.body
    except RequestDataTooBig:
        raise payload_too_large() from None
    if not body and default is not _NOT_GIVEN:
        return default
    if body and not media_type_matches(JSONBodyParser.media_type, request.content_type or ""):
        # As the DRF views answer a body they have no parser for.
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"The body must be {JSONBodyParser.media_type}.",
            {"contentType": request.content_type},
        )
    return load_json(body)


class JSONBodyParser(BaseParser):
    """DRF's JSON parser, through `load_json` and the upload limit."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise payload_too_large()
        # JSON is UTF-8 (RFC 8259): a `charset` the Content-Type declares is not read, as
        # the streams (read_json_body) do not, so one body gets one answer everywhere.
        return load_json(raw)
