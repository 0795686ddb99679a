# The sandbox image: every `sandbox` command, the same entry point as the local route.
# On a machine without a registry, `make images` builds a python:3.11-slim look-alike that
# already trusts the machine's extra CA certificates (infra/images/README.md).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY config ./config
COPY kafka_io ./kafka_io
COPY sandbox ./sandbox
COPY schemas ./schemas
COPY producers ./producers
COPY pipeline ./pipeline
COPY infra ./infra
# A normal (non-editable) install: tests/test_packaging.py checks it holds every module.
RUN pip install --no-cache-dir -c constraints.txt . && rm -rf /app/*
# State (the worker's Faust data dir) lives in the container; the lake is in the catalog + S3.
ENV SANDBOX_STATE_DIR=/data
WORKDIR /data
ENTRYPOINT ["sandbox"]
