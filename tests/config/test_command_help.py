"""Every option of the project's management commands and of the server explains itself in
`--help`."""

import argparse

import pytest
from django.core.management import get_commands, load_command_class

from config.serve import main as serve_main

PROJECT_APPS = {"events", "notifications", "sla", "tenants", "ticketing"}
# Django's own options of every command (--verbosity, --settings, …) are documented by Django.
DJANGO_OPTIONS = {
    "help", "version", "verbosity", "settings", "pythonpath", "traceback", "no_color", "force_color", "skip_checks"
}  # fmt: skip


def project_commands() -> list[tuple[str, str]]:
    return sorted((name, app) for name, app in get_commands().items() if app in PROJECT_APPS)


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    return [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if action.dest not in DJANGO_OPTIONS and not action.help
    ]


def test_the_project_has_its_commands():
    names = {name for name, _ in project_commands()}
    assert {"load_demo", "quickstart", "issue_token", "create_api_key", "sla_monitor"} <= names
    assert {"export_events", "replay_events", "prune_events"} <= names


@pytest.mark.parametrize(("name", "app"), project_commands())
def test_every_option_of_a_project_command_has_help(name: str, app: str):
    command = load_command_class(app, name)
    assert command.help
    assert undocumented(command.create_parser("manage.py", name)) == []


def test_every_option_of_the_server_has_help(monkeypatch: pytest.MonkeyPatch):
    parsers: list[argparse.ArgumentParser] = []

    def capture(self: argparse.ArgumentParser, *args, **kwargs):
        parsers.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        serve_main([])
    assert undocumented(parsers[0]) == []
