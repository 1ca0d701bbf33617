# BehaviorGate gateway image. CPU-only torch (used only by the trainer subprocess).
# Package index hosts are not hard-coded: pass --build-arg PIP_INDEX_URL=... / TORCH_INDEX_URL=...
FROM python:3.11-slim

ARG PIP_INDEX_URL=""
ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    BEHAVIORGATE_DATA_DIR=/var/lib/behaviorgate

RUN groupadd --system gate && useradd --system --gid gate --home /app gate \
 && mkdir -p /app /var/lib/behaviorgate && chown gate:gate /var/lib/behaviorgate
WORKDIR /app

COPY pyproject.toml README.md ./
COPY config ./config
COPY scoring ./scoring
COPY storage ./storage
COPY proxy ./proxy

RUN set -eux; \
    idx=""; [ -n "$PIP_INDEX_URL" ] && idx="--index-url $PIP_INDEX_URL"; \
    tidx="$idx"; [ -n "$TORCH_INDEX_URL" ] && tidx="--index-url $TORCH_INDEX_URL"; \
    pip install $tidx "torch==2.13.0"; \
    pip install $idx .

USER gate
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/_behaviorgate/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["behaviorgate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
