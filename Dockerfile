# kite-connector: one image for `run`, `simulate` and `consume`.
# BASE_IMAGE defaults to the official slim Python; machines without a registry pass the locally built
# base (docker/build-local-images.sh). No credential is ever copied or baked into a layer.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md /src/
COPY connector /src/connector
COPY schemas /src/schemas
RUN /opt/venv/bin/pip install /src

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --create-home --home-dir /home/connector connector \
 && mkdir -p /home/connector/spool && chown connector /home/connector/spool
USER connector
WORKDIR /home/connector
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
EXPOSE 9100 8765
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4)"]
ENTRYPOINT ["kite-connector"]
CMD ["run"]
