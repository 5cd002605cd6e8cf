# The MLflow tracking server: Postgres backend store, artifacts proxied to S3 (MinIO).
# Build from the repository root: docker build -f docker/mlflow.Dockerfile -t $MLFLOW_IMG .

FROM python:3.11-slim-bookworm
RUN pip install --no-cache-dir mlflow==3.17.2 "psycopg[binary]==3.3.9" boto3==1.40.61 \
    && groupadd --gid 10001 mlflow \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin mlflow
ENV HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_DISABLE_TELEMETRY=true
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
# The backend URI and the artifact destination come from the Deployment's args and env.
ENTRYPOINT ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
