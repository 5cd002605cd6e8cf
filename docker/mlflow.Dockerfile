# The MLflow tracking server: Postgres backend store, artifacts proxied to S3 (MinIO).
# Build from the repository root: docker build -f docker/mlflow.Dockerfile -t $MLFLOW_IMG .
# MLflow comes from the project's lock file (extra `server`), so the server runs the very
# version the stages use (3.18.0, installed as pyproject.toml's [tool.uv] explains).

FROM python:3.11-slim-bookworm AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-install-project --no-dev --extra server

FROM python:3.11-slim-bookworm
RUN groupadd --gid 10001 mlflow \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin mlflow
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_DISABLE_TELEMETRY=true
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
# The backend URI and the artifact destination come from the Deployment's args and env.
ENTRYPOINT ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
