# syntax=docker/dockerfile:1
# `remediate serve` in an image: the receiver on :8080, its Prefect server on SQLite in the state
# volume, every deployment and schedule. Built from uv.lock (no dev tools), run as a non-root user.
#
# BASE is any Debian bookworm image with python3 (3.11) and python3-venv. No registry is reachable
# on our own machines, so `scripts/build-image.sh` makes it from Debian's packages (debootstrap)
# and tags it by what went in; elsewhere `--build-arg BASE=debian:bookworm-slim` plus python3 works.
ARG BASE=localhost/remediate-base:bookworm-1

FROM ${BASE} AS build
# A CA bundle for a network that inspects TLS may arrive as the build secret `ca` (the host's;
# scripts/build-image.sh passes it); it is never written into a layer, and without it the
# image's own CA certificates are used. `with-ca` runs a command with whichever applies.
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv UV_PYTHON=/usr/bin/python3
RUN printf '%s\n' '#!/bin/sh' \
      'if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca PIP_CERT=/run/secrets/ca; fi' \
      'exec "$@"' > /usr/local/bin/with-ca && chmod +x /usr/local/bin/with-ca
RUN --mount=type=secret,id=ca \
    python3 -m venv /opt/uv && with-ca /opt/uv/bin/pip install --no-cache-dir -q "uv>=0.5,<1"
WORKDIR /src
# The dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=secret,id=ca with-ca /opt/uv/bin/uv sync --frozen --no-dev --no-install-project
COPY remediate remediate
COPY flows flows
COPY tasks tasks
COPY deployments deployments
COPY drills drills
COPY migrations migrations
COPY prefect.yaml ./
RUN --mount=type=secret,id=ca with-ca /opt/uv/bin/uv sync --frozen --no-dev --no-editable \
    && /app/.venv/bin/remediate --version

FROM ${BASE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/remediate --create-home \
      --shell /usr/sbin/nologin remediate
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    REMEDIATE_HOME=/var/lib/remediate \
    PREFECT_HOME=/var/lib/remediate/prefect \
    PYTHONUNBUFFERED=1
USER remediate
WORKDIR /var/lib/remediate
VOLUME /var/lib/remediate
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["remediate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
