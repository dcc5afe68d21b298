# TermPulse: one image for the web app (`serve`) and the checkers (`worker`).

# Build stage: the wheel, which carries migrations/, templates/ and static/ inside the package.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY app ./app
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# Final stage: the wheel installed like any package; no source tree, no alembic.ini.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TERMPULSE_HOST=0.0.0.0 TERMPULSE_LOG_FORMAT=json
COPY --from=build /dist /tmp/dist
RUN pip install /tmp/dist/*.whl && rm -rf /tmp/dist \
    && useradd --create-home --uid 10001 termpulse

USER termpulse
WORKDIR /home/termpulse
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
CMD ["termpulse", "serve"]
