# ehr-sandbox: one image for every process of the production shape (web, outbox worker, MLLP listener).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EHR_SANDBOX_HOST=0.0.0.0 \
    EHR_SANDBOX_DATA_DIR=/var/lib/ehr-sandbox \
    EHR_SANDBOX_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY sandbox ./sandbox
COPY synthetic_data ./synthetic_data
COPY tasks ./tasks
COPY web ./web
COPY bench ./bench
RUN pip install --no-cache-dir . \
    && useradd --system --uid 999 --home-dir /var/lib/ehr-sandbox --create-home ehr \
    && chown -R ehr /var/lib/ehr-sandbox
USER ehr

EXPOSE 8080 2575
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
CMD ["ehr-sandbox", "serve", "--no-worker"]
