# syntax=docker/dockerfile:1
# Build stage: a wheel-only virtualenv with actorproxy and its runtime dependencies.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt .ci/constraints.txt
COPY actorproxy actorproxy
COPY bench bench
RUN python -m venv /opt/actorproxy \
    && /opt/actorproxy/bin/pip install -c .ci/constraints.txt .

# Runtime stage: the virtualenv only, run as an unprivileged user.
FROM python:3.11-slim-bookworm
ENV PATH=/opt/actorproxy/bin:$PATH PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --home-dir /var/lib/actorproxy --create-home actorproxy
COPY --from=build /opt/actorproxy /opt/actorproxy
USER 10001:10001
WORKDIR /var/lib/actorproxy
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]
ENTRYPOINT ["actorproxy"]
# Off loopback the proxy requires a key: run with -e ACTORPROXY_MASTER_KEY=... or a config file.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
