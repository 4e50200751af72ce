# Parley as a container: the hash-locked runtime dependencies `make run` uses (no test,
# lint or benchmark tools).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/runtime.txt

COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && useradd --create-home parley && mkdir -p /data && chown parley /data
USER parley

ENV PARLEY_HOST=0.0.0.0 PARLEY_PORT=8000 PARLEY_LOG_FORMAT=json \
    PARLEY_DATABASE_URL=sqlite+aiosqlite:////data/parley.db
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["parley", "serve"]
