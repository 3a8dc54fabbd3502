# One image for every vamu-tasks process; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs: never .env, .venv or the Node test harness.
WORKDIR /src
COPY pyproject.toml README.md celeryconfig.py flowerconfig.py ./
COPY vamu_tasks ./vamu_tasks
COPY workers ./workers
RUN pip install . \
    && useradd --create-home --uid 10001 --user-group vamu \
    && mkdir -p /var/lib/vamu \
    && chown vamu:vamu /var/lib/vamu

# The working directory is where the processes look for .env and keep their data directory
# (the beat schedule of workers.notify), so it must be writable by the non-root user.
WORKDIR /var/lib/vamu
ENV VAMU_DATA_DIR=/var/lib/vamu
USER vamu

CMD ["python", "-m", "workers.llm"]
