# syntax=docker/dockerfile:1
# The service's image, used by every service of docker-compose.yml (web, migrate, the SLA
# monitor). Two stages: the builder installs the dependencies into a virtualenv; the
# runtime image gets that virtualenv and the application's runtime files only (the build
# context is already cut down by .dockerignore: no tests, docs, benchmarks, .git, .venv or
# databases), and runs as an unprivileged user that cannot change the code.
# Not built on the development machines (no container daemon); CI validates the compose
# file and runs the same topology as plain processes (docs/operations.md, "Deploy").

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /build
# Only the project's metadata: the dependency layer is rebuilt when pyproject.toml
# changes, not on every code change. The project itself has no packages to install
# (`[tool.setuptools] packages = []`): this installs its dependencies (all binary wheels).
COPY pyproject.toml ./
RUN pip install . && pip uninstall --yes ticketing-service

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Owned by root and read-only for `app`. Static files (the dashboard's, the admin's,
# Swagger UI's) are served by the app from the installed packages and app folders
# (config/urls.py), so there is no collectstatic step.
COPY . .
# Compiled once here: the runtime user cannot write __pycache__ next to the code.
RUN python -m compileall -q /app /opt/venv \
    && DEBUG=1 python manage.py check
USER app
EXPOSE 8000
# The worker count comes from WEB_WORKERS (docker-compose.yml), the rest of the
# configuration from the environment (config/settings.py). SECRET_KEY has no default:
# without it the process refuses to start.
CMD ["python", "-m", "config.serve"]
