"""The README's configuration table is where an operator looks for a setting: every
environment variable the configuration modules read is in it."""

from __future__ import annotations

import re

from tests.conftest import ROOT

# Read by Django itself, not a setting of this service.
NOT_SETTINGS = {"DJANGO_SETTINGS_MODULE"}
# `os.environ.get("X"`, `os.environ["X"]`, `env_int("X"`, `env_parsed(\n "X"`, … (a call may wrap its line).
READ = re.compile(
    r"""(?:environ\.get|environ\.setdefault|getenv|environ\[|\benv_[a-z_]+)\(?\s*['"]([A-Z][A-Z0-9_]+)['"]"""
)


def variables_read_by_the_configuration() -> set[str]:
    names: set[str] = set()
    for module in sorted((ROOT / "config").glob("*.py")):
        names |= set(READ.findall(module.read_text()))
    return names - NOT_SETTINGS


def readme_configuration_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Configuration\n")
    return readme[start : readme.index("\n## ", start + 1)]


def test_every_variable_the_configuration_reads_is_in_the_readme_table():
    read = variables_read_by_the_configuration()
    assert {"REDIS_URL", "SECRET_KEY", "SERVER_GRACEFUL_SHUTDOWN_SECONDS", "LOG_FORMAT", "PORT"} <= read, read
    table = readme_configuration_section()
    missing = sorted(name for name in read if f"`{name}`" not in table)
    assert not missing, f"not in the README's configuration table: {missing}"
