# rawproxy in a small image: python:3.11-slim plus the runtime dependencies only
# (trio, h11, httpcore, certifi and what they pull in, about 11 MB), run as a non-root user.
# tests/production/test_container.py installs the same set, from the same COPY lines, in a
# fresh venv and serves from it: the stand-in for `docker build` where no runtime exists.
#
#   docker build -t rawproxy .
#   docker run --rm -p 8000:8000 rawproxy python -m rawproxy --host 0.0.0.0 --simulator  # scripted Kimi
#   docker run --rm -p 8000:8000 -e ZENMUX_API_KEY=sk-... -e PROXY_API_KEYS=key1,key2 rawproxy
#
# Listening on 0.0.0.0 with an upstream key (ZENMUX_API_KEY) requires access keys that
# clients must present (PROXY_API_KEYS=key1,key2), or PROXY_ALLOW_OPEN=1 on purpose (e.g.
# behind a gateway that authenticates); with no upstream key, each client's own key is
# forwarded and neither is needed. Every other setting is an environment variable too
# (README.md, "Settings"). Several workers: -e PROXY_WORKERS=4 keeps the shared reasoning
# store in $XDG_STATE_HOME/rawproxy; mount a volume there to keep it across containers:
#   -v rawproxy-state:/var/lib/rawproxy
# On SIGTERM in-flight requests get PROXY_GRACEFUL_TIMEOUT (30 s) to finish: give
# `docker stop -t 40` (the default 10 s cuts them short).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    XDG_STATE_HOME=/var/lib/rawproxy

COPY pyproject.toml README.md /src/
COPY rawproxy /src/rawproxy
# Optional extras on top of the runtime set: `--build-arg EXTRAS=redis` for a Redis store
# (docker-compose.yml and deploy/kubernetes/ need it; it adds about 20 MB).
ARG EXTRAS=""
RUN pip install --no-cache-dir /src \
 && if [ -n "$EXTRAS" ]; then pip install --no-cache-dir "/src[$EXTRAS]"; fi \
 && rm -rf /src \
 && useradd --system --user-group --uid 10001 --home-dir /var/lib/rawproxy --create-home rawproxy \
 && chmod 700 /var/lib/rawproxy

USER rawproxy
WORKDIR /var/lib/rawproxy
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PROXY_PORT', '8000'), timeout=4)"
CMD ["python", "-m", "rawproxy", "--host", "0.0.0.0"]
