# kite-connector: one image for `run`, `simulate` and `consume`.
# BASE_IMAGE defaults to the official slim Python; machines without a registry pass the locally built
# base (docker/build-local-images.sh). No credential is ever copied or baked into a layer.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A C compiler (build stage only) for the native Tick encoder; without one the package stays pure Python.
RUN if ! command -v cc >/dev/null; then \
      headers="$(python3 -c 'import os, sysconfig; print("" if os.path.exists(sysconfig.get_paths()["include"] + "/Python.h") else "python3-dev")')"; \
      (apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev $headers >/dev/null) \
        || echo "no C compiler: the image uses the pure Python encoder"; \
    fi
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md hatch_build.py /src/
COPY connector /src/connector
COPY schemas /src/schemas
RUN /opt/venv/bin/pip install /src \
 && /opt/venv/bin/python -c "from connector.serde._tick import NATIVE; print('native Tick encoder:', NATIVE)"

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
RUN useradd --uid 10001 --create-home --home-dir /home/connector connector \
 && mkdir -p /home/connector/order-log && chown connector /home/connector/order-log
USER connector
WORKDIR /home/connector
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
EXPOSE 9100 8765
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4)"]
ENTRYPOINT ["kite-connector"]
CMD ["run"]
