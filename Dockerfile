# syntax=docker/dockerfile:1
# One image for every BeesTown worker; the role is chosen at run time by
# BEESTOWN_WORKER_ROLES (see docker-compose.temporal.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# bubblewrap is the local sandbox backend: code cells run inside bwrap namespaces.
# Debian's own python3 (3.11 on bookworm) is the sandbox's base interpreter: it lives
# under /usr, which every sandbox binds read-only (runtime/sandbox/setup.py); the
# image's /usr/local python runs the worker.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# bwrap runs unprivileged (user namespaces), so the worker needs no root at run time;
# sandboxed code then runs as this same uid. The state dir is pinned so that the
# batteries installed below and the worker at run time agree on where they are.
ENV BEESTOWN_STATE_DIR=/var/lib/beestown
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin beestown \
    && install -d -o beestown -g beestown -m 0755 "$BEESTOWN_STATE_DIR"

WORKDIR /app

# Dependencies first, from pyproject alone, so a source edit does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Root-owned and read-only to the worker user: sandboxed code cannot rewrite the worker.
COPY . .
RUN pip install --no-deps .

USER beestown
# Batteries (the sandbox's venv) go to $BEESTOWN_STATE_DIR/sandbox-env as the run-time
# user, which is where the worker looks for them when it is not root.
RUN python -m runtime.sandbox.setup

ENTRYPOINT ["python", "worker.py"]
