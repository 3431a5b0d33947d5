# The image compose.yaml builds: mpitrack with MPICH from Debian, for the
# separate-process services (listen, dispatch, work, stats). Installed
# editable because the schema (sql/) lives beside the package.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends mpich libmpich-dev gcc \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mpitrack/src
COPY pyproject.toml README.md apptainer/constraints.txt ./
COPY mpitrack ./mpitrack
COPY sql ./sql
RUN pip install --no-cache-dir -c constraints.txt -e . \
 && useradd --create-home --uid 1000 mpitrack
USER mpitrack
ENTRYPOINT ["mpitrack"]
CMD ["--help"]
