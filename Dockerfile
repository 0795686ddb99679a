# The sandbox image: every `sandbox` command, the same entry point as the local route.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY sandbox ./sandbox
COPY schemas ./schemas
COPY producers ./producers
COPY pipeline ./pipeline
COPY infra ./infra
RUN pip install --no-cache-dir -c constraints.txt .
ENV SANDBOX_STATE_DIR=/data
VOLUME /data
ENTRYPOINT ["sandbox"]
