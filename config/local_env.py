"""The checkout's own settings file, `.env`, for development.

`make run` turns DEBUG on for what it starts. So that every command of the README also
works in a new shell afterwards (`manage.py issue_token`, `manage.py help`,
`python -m config.serve` …) without `DEBUG=1` in front, `make run` writes `.env` in the
checkout once (`python -m config.local_env`), and the entry points — `manage.py` and
`config.serve` — read it before Django's settings. It is never committed (`.gitignore`),
a variable set in the environment always wins over it, and settings.py does not read it,
so the test suite and a deployment (which sets `SECRET_KEY` and has no `.env`) run with
production settings. Delete it to run the checkout with production settings; add
`DATABASE_URL=…` or `REDIS_URL=…` to it to point every command at the same services.

`ENV_FILE` names another file (or `/dev/null` for none)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent

DEFAULT_CONTENT = """\
# Written by `make run`: development settings of this checkout, read by manage.py and
# `python -m config.serve` (variables set in the environment win). Never committed.
# Delete this file to run with production settings (then SECRET_KEY is required).
DEBUG=1
"""


def env_file() -> Path:
    return Path(os.environ.get("ENV_FILE") or BASE_DIR / ".env")


def load_local_env() -> bool:
    """Read the checkout's `.env` into os.environ without overriding what is set there.
    Returns whether a file was read."""
    path = env_file()
    if not path.is_file():
        return False
    load_dotenv(path, override=False)
    return True


def write_default_env(path: Path | None = None) -> bool:
    """Create the development `.env` unless one exists (a developer's edits are kept).
    Returns whether it was written."""
    path = path or env_file()
    if path.exists():
        return False
    path.write_text(DEFAULT_CONTENT, encoding="utf-8")
    return True


if __name__ == "__main__":
    target = env_file()
    if write_default_env(target):
        print(f"==> wrote {target.name} (DEBUG=1 for this checkout's commands; see config/local_env.py)")
    sys.exit(0)
