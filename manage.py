#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    from config.local_env import load_local_env

    # The checkout's .env (written by `make run`: DEBUG=1), so commands work in a new
    # shell; a variable set in the environment wins.
    load_local_env()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config.env import load_settings_or_exit

    # A bad setting ends the command with one line naming it, not a traceback.
    load_settings_or_exit("manage.py")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
