# Slim runtime image for the API, worker and sweeper roles (the same image; the command picks the role).
# Build with the local-training extra: docker build --build-arg EXTRAS=local .

# Wheels are built in a stage with a C compiler (for the native token counter, service/_tokcount.c), so the runtime
# image carries no compiler.
FROM python:3.11-slim AS build
ARG EXTRAS=""
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY api_schemas ./api_schemas
COPY service ./service
COPY worker ./worker
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim AS runtime

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FINETUNE_DATA_DIR=/data \
    FINETUNE_CACHE_DIR=/data/cache \
    FINETUNE_HOST=0.0.0.0 \
    FINETUNE_PORT=8000

RUN groupadd --system --gid 10001 finetune \
 && useradd --system --uid 10001 --gid finetune --home-dir /app --shell /usr/sbin/nologin finetune \
 && mkdir -p /app /data && chown finetune:finetune /data

WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "finetune-control-plane${EXTRAS:+[$EXTRAS]}" \
 && rm -rf /wheels

USER finetune
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"FINETUNE_PORT\", \"8000\")}/healthz', timeout=2)" || exit 1

CMD ["finetune", "api"]
