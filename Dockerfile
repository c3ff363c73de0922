# rowhook: one image for every role (migrate, serve, relay, prune, status); docker-compose.yml wires them.
# Build: docker build -t rowhook .

FROM python:3.12-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir "build>=1.2"
COPY pyproject.toml README.md ./
COPY rowhook rowhook
COPY relay relay
COPY api api
COPY sql sql
# The wheel carries sql/ (as rowhook/sql), so `rowhook migrate` needs no checkout at run time.
RUN python -m build --wheel --outdir /dist

FROM python:3.12-slim
RUN useradd --system --create-home --uid 10001 rowhook
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl && rm -rf /tmp/dist
USER rowhook
ENV PYTHONUNBUFFERED=1
EXPOSE 8000
# Configuration comes from ROWHOOK_* environment variables (at least ROWHOOK_DATABASE_URL).
CMD ["rowhook", "--help"]
