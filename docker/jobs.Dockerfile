# The jobs image: every stage runs from it as `python -m jobs.<stage> [overrides]`.
# Build from the repository root: docker build -f docker/jobs.Dockerfile -t $IMG .
#
# Your own domain needs no change here. Build a thin image on top of this one with your tools
# package and your config folder (experiment/, agent/, judge/, dataset/), and point the two
# variables at them; then run the stages with experiment=<yours>:
#   FROM registry.example.com/promptgate-jobs:0.1
#   COPY --chown=10001:10001 mydomain/ /opt/mydomain/
#   ENV PYTHONPATH=/app:/opt/mydomain \
#       PROMPTGATE_CONFIG_PATH=/opt/mydomain/conf

FROM python:3.11-slim-bookworm AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Dependencies first, from the lock file, so code changes reuse this layer.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-install-project --no-dev
COPY jobs ./jobs
COPY hydra_plugins ./hydra_plugins
COPY conf ./conf
COPY data ./data

# Final stage: the interpreter, the venv and the code; no compilers, no uv.
FROM python:3.11-slim-bookworm
RUN groupadd --gid 10001 promptgate \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin promptgate
WORKDIR /app
COPY --from=build --chown=10001:10001 /app /app
# The root filesystem is read-only in the pods: state, caches and HOME live on an emptyDir at /tmp.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONHASHSEED=0 \
    HOME=/tmp \
    PROMPTGATE_STATE_DIR=/tmp/promptgate \
    MPLCONFIGDIR=/tmp/matplotlib \
    MLFLOW_DISABLE_TELEMETRY=true
USER 10001:10001
# checkov:skip=CKV_DOCKER_2: a stage is a batch Job that exits; Kubernetes tracks it by exit code, not a health probe
ENTRYPOINT ["python", "-m"]
CMD ["jobs.pipeline", "--help"]
