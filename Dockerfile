# The leadflow worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY agents ./agents
COPY sinks ./sinks
COPY providers ./providers
COPY simulator ./simulator
COPY schemas ./schemas
COPY infra ./infra
RUN pip install --no-cache-dir -e .
ENV LEADFLOW_WEB_BIND=0.0.0.0
EXPOSE 6066
CMD ["leadflow", "worker", "-l", "info"]
