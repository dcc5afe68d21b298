# TermPulse: one image for the web app (`serve`) and the checkers (`worker`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TERMPULSE_HOST=0.0.0.0 TERMPULSE_LOG_FORMAT=json

RUN useradd --create-home --uid 10001 termpulse
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
# Editable install keeps templates/, static/ and migrations/ beside the package, where the app looks.
RUN pip install -e . && chown -R termpulse /app

USER termpulse
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
CMD ["termpulse", "serve"]
