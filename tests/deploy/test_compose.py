"""docker-compose.yml, checked by a compose implementation (Debian's `docker-compose`, or
Compose v2 where installed): valid with a SECRET_KEY, refused without one, and shaped as
production needs it. The image's build context (.dockerignore) is checked without a
container daemon: runtime files in, local state and development files out."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.apps import apps

from tests.conftest import ROOT


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    return None


needs_compose = pytest.mark.skipif(
    compose_command() is None, reason="no compose implementation (Debian: apt-get install docker-compose)"
)


def compose_config(**env: str) -> subprocess.CompletedProcess:
    command = compose_command()
    assert command
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "ALLOWED_HOSTS"}}
    return subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_compose
def test_compose_refuses_to_start_without_a_secret_key():
    result = compose_config()
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


@needs_compose
def test_compose_file_is_valid_and_shaped_for_production():
    result = compose_config(SECRET_KEY="a-long-random-secret", ALLOWED_HOSTS="tickets.example.com")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"db", "redis", "migrate", "web", "sla_monitor", "proxy"} <= set(services)

    app_services = [name for name, s in services.items() if "build" in s]
    assert set(app_services) >= {"migrate", "web", "sla_monitor"}
    for name in app_services:
        service = services[name]
        assert service["build"]["dockerfile"] == "Dockerfile", name
        environment = service["environment"]
        assert environment["SECRET_KEY"] == "a-long-random-secret", name
        assert "*" not in environment["ALLOWED_HOSTS"].split(","), name
        assert "tickets.example.com" in environment["ALLOWED_HOSTS"].split(","), name
    for name, service in services.items():
        expected = "no" if name == "migrate" else "unless-stopped"
        assert service.get("restart") == expected, name

    web = services["web"]
    assert "/readyz" in " ".join(web["healthcheck"]["test"])
    assert "ports" not in web, "the workers are reached through the proxy only"
    assert web["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert int(web["environment"]["WEB_WORKERS"]) >= 2
    proxy = services["proxy"]
    assert any("deploy/nginx/ticketing.conf.template" in str(v) for v in proxy["volumes"])
    assert web["environment"]["FORWARDED_ALLOW_IPS"] == proxy["networks"]["backend"]["ipv4_address"]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    patterns = dockerignore_patterns()
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)


def test_the_image_gets_every_app_and_no_local_state():
    for config in apps.get_app_configs():
        folder = Path(config.path)
        if folder.is_relative_to(ROOT):
            assert not ignored(folder.relative_to(ROOT).as_posix()), f"{config.label} would be left out of the image"
    for runtime in ("manage.py", "config", "templates", "pyproject.toml"):
        assert not ignored(runtime), runtime
    for local in (".venv", ".git", "db.sqlite3", "test_db.sqlite3", "tests", "docs", "bench"):
        assert ignored(local), f"{local} would be copied into the image"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER app\n" in dockerfile
    assert dockerfile.count("\nFROM ") == 2, "a builder stage and a runtime stage"


def test_the_images_files_alone_run_the_service(tmp_path: Path):
    """The build context, as .dockerignore leaves it, is enough: the app loads, every
    migration is there, the dashboard's static files and templates are found."""
    context = tmp_path / "app"
    for dirpath, dirnames, filenames in os.walk(ROOT):
        here = Path(dirpath).relative_to(ROOT)
        dirnames[:] = [d for d in dirnames if not ignored((here / d).as_posix())]
        for name in filenames:
            relative = (here / name).as_posix()
            if not ignored(relative):
                (context / here).mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, context / relative)
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        "SECRET_KEY": "image-check",
        "SQLITE_PATH": str(tmp_path / "image.sqlite3"),
    }
    script = (
        "import config.asgi;"
        "from django.core.management import call_command;"
        "call_command('migrate', verbosity=0);"
        "from django.contrib.staticfiles import finders;"
        "assert finders.find('dashboard/common.js').startswith(__import__('os').getcwd());"
        "assert finders.find('admin/css/base.css');"
        "from django.template.loader import get_template; get_template('dashboard/list.html');"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=context, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr[-3000:]
    assert not (context / "tests").exists() and not (context / ".git").exists()


def test_a_rotated_secret_key_still_verifies_what_the_previous_one_signed():
    """SECRET_KEY_FALLBACKS: sessions signed before a rotation stay valid until they expire."""
    script = (
        "import django; django.setup();"
        "from django.core import signing;"
        "print(signing.loads(signing.dumps('still signed in', key='the-old-key')))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "SECRET_KEY": "the-new-key"}
    rotated = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**env, "SECRET_KEY_FALLBACKS": "the-old-key"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert rotated.stdout.strip() == "still signed in", rotated.stderr
    without = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert "BadSignature" in without.stderr
