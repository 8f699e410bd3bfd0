"""A bad setting stops the start: the server and manage.py refuse to start with one line
naming the variable, its value and what is allowed (config.env), instead of starting,
answering /readyz and failing the requests that read it. Every default the README's
configuration table documents is accepted, and is the default the code has."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
import pytest

from tests import conftest
from tests.config.test_settings_documented import readme_configuration_section
from tests.conftest import ROOT, ServerProcess
from tests.pushpin import free_port


def clean_env(**extra: str) -> dict[str, str]:
    """The suite's environment without any setting of the README's table, plus `extra`."""
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", readme_configuration_section()))
    env = {name: value for name, value in os.environ.items() if name not in documented}
    return {**env, "ENV_FILE": os.devnull, "SECRET_KEY": "test-only-secret-key", **extra}


BAD_VALUES = [
    ("RATE_LIMIT_PER_USER", "abc", "600/minute"),
    ("RATE_LIMIT_PER_USER", "0/minute", "count above 0"),
    ("RATE_LIMIT_TENANT_OVERRIDES", "{bad", "JSON object"),
    ("WEBHOOKS_SECRET_KEYS", "notafernetkey", "Fernet"),
    ("REDIS_URL", "notaurl", "redis://"),
    ("SSE_HEARTBEAT_SECONDS", "0", "above 0"),
    ("SSE_HEARTBEAT_SECONDS", "abc", "number"),
    ("DB_POOL_MAX_SIZE", "0", "at least 1"),
    ("WEBHOOKS_RETRY_SCHEDULE", "5,x", "separated by commas"),
    ("WEB_WORKERS", "abc", "whole number"),
    ("PORT", "abc", "whole number"),
    ("LOG_FORMAT", "xml", "'json', 'text'"),
    ("LOG_LEVEL", "loud", "'DEBUG'"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_VALUES, ids=[f"{n}={v}" for n, v, _ in BAD_VALUES])
def test_the_server_refuses_to_start_with_a_bad_setting_in_one_line(name: str, value: str, allowed: str):
    port = free_port()
    env = clean_env(DATABASE_URL=conftest.test_database_url(), **{name: value})
    result = subprocess.run(
        [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback
    assert lines[0].startswith(f"python -m config.serve: configuration error: {name}="), lines
    assert allowed in lines[0], lines
    if name in ("WEBHOOKS_SECRET_KEYS", "REDIS_URL"):
        # May hold a key or a password: named, not repeated.
        assert value not in lines[0]
    else:
        assert repr(value) in lines[0]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)


def test_manage_py_refuses_to_run_with_a_bad_setting_in_one_line():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=clean_env(RATE_LIMIT_PER_API_KEY="lots"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        "manage.py: configuration error: RATE_LIMIT_PER_API_KEY='lots' is not valid: "
        "expected a rate such as 600/minute or 10/second, its count above 0."
    ]


@pytest.mark.django_db(transaction=True)
def test_a_log_level_in_lower_case_is_accepted():
    # `debug` made every process fail to configure its root logger.
    server = ServerProcess(LOG_LEVEL="debug").start()
    try:
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        assert "Unable to configure" not in server.log_path.read_text(errors="replace")
    finally:
        server.stop()


def documented_defaults() -> dict[str, str]:
    """`{variable: default}` for every default of the README's table written as a value (a
    number, on/off, `code`, empty); prose ("unset: …", "derived from …") is left out."""
    defaults: dict[str, str] = {}
    for row in readme_configuration_section().splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        values = re.split(r", | / ", cells[1])
        if len(names) != len(values):
            continue
        for name, text in zip(names, values, strict=True):
            if re.fullmatch(r"-?[0-9.]+", text):
                defaults[name] = text
            elif text in ("on", "off"):
                defaults[name] = "1" if text == "on" else ""  # empty is off for every switch
            elif text == "empty":
                defaults[name] = ""
            elif re.fullmatch(r"`[^`]*`", text):
                defaults[name] = text.strip("`")
            elif re.fullmatch(r"[A-Za-z0-9.]+", text) and text.upper() == text:
                defaults[name] = text  # INFO
    return defaults


SETTINGS_DUMP = (
    "import json, config.settings as s; "
    "print(json.dumps({k: repr(getattr(s, k)) for k in dir(s) if k.isupper()}, sort_keys=True))"
)


def loaded_settings(env: dict[str, str]) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", SETTINGS_DUMP], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_documented_default_parses_and_is_the_default():
    defaults = documented_defaults()
    # The table's shapes this reads: numbers, switches, code, a level name.
    assert {"SSE_HEARTBEAT_SECONDS", "DB_POOL_MAX_SIZE", "RATE_LIMIT_PER_USER", "WEBHOOKS_RETRY_SCHEDULE"} <= set(
        defaults
    ), defaults
    assert {"LOG_LEVEL", "RATE_LIMIT_TENANT_OVERRIDES", "SSE_EDGE", "DB_POOL", "PORT"} <= set(defaults), defaults
    # PostgreSQL's settings (the pool) are made without connecting.
    base = clean_env(DATABASE_URL="postgres://nobody@127.0.0.1:9/none")
    assert loaded_settings({**base, **defaults}) == loaded_settings(base)
