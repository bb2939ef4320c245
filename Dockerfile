# One image for every process of the Procfile; the role is the command: web, openpi, worker <model>, safety,
# reaper, flower, migrate (ops/container.py). Targets: `prod` (the default: no checkpoints, mount real ones
# read-only at /models) and `dev` (adds the tiny random-weight checkpoints).
#
# Variants by build argument (docs/deploy.md):
#   CUDA (default): torch from PyPI brings its own CUDA libraries; the host needs only the NVIDIA driver and
#                   the NVIDIA container toolkit.
#   CPU:            --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (about 4 GB smaller).
# BASE_IMAGE is any Debian bookworm image: python:3.11-slim-bookworm (default), or a bare Debian root
# (ops/containers/base_image.sh) on machines that reach no registry; Python 3.11 is installed when missing.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log; \
    fi

# ---- build: the virtual environment. Nothing of this stage but /opt/venv reaches the image. ----
FROM python AS build
RUN if ! python3 -c 'import ensurepip' 2>/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3-venv; \
    fi
RUN python3 -m venv /opt/venv
# Extra package sources for the build only (a local mirror on machines behind a proxy); empty by default.
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
COPY setup.cfg ops/containers/requirements.py /tmp/
# The dependencies first, from setup.cfg alone, so a source change does not reinstall them.
# A CA bundle for a TLS-intercepting proxy comes as the build secret `pip_ca`, never as a layer.
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/venv/bin/python /tmp/requirements.py /tmp/setup.cfg > /tmp/requirements.txt \
    && /opt/venv/bin/pip install -q ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r /tmp/requirements.txt \
    && rm -rf /opt/venv/lib/python3.11/site-packages/pip /opt/venv/bin/pip* /root/.cache

# ---- prod: the runtime image ----
FROM python AS prod
RUN useradd --system --uid 10001 --create-home --home-dir /home/vlaapi vlaapi \
    && mkdir -p /models /data/uploads /data/datasets \
    && chown -R vlaapi:vlaapi /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root Procfile celeryconfig.py setup.cfg pyproject.toml README.md ./
COPY --chown=root:root migrations ./migrations
COPY --chown=root:root safety ./safety
COPY --chown=root:root workers ./workers
COPY --chown=root:root web ./web
COPY --chown=root:root ops ./ops
# `vlaapi` without installing the package into the venv (which would tie the venv's layer to the source).
# Bytecode compiled now: the processes run as a user who cannot write /app.
RUN printf '#!/opt/venv/bin/python\nfrom ops.cli import main\nmain()\n' > /opt/venv/bin/vlaapi \
    && chmod 755 /opt/venv/bin/vlaapi && /opt/venv/bin/python -m compileall -q /app
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 \
    MODEL_DIR=/models REPLAY_DATA_ROOT=/data/datasets REPLAY_UPLOAD_DIR=/data/uploads \
    WEB_BIND=0.0.0.0:8000 OPENPI_HOST=0.0.0.0 FLOWER_ADDRESS=0.0.0.0 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
USER vlaapi
EXPOSE 8000 8765 5555
# Each role's own check (ops/healthcheck.py): the web's /health answers, a worker's heartbeat from this
# container is fresh and says it consumes, the reaper has passed lately, the openpi and Flower ports accept.
HEALTHCHECK --interval=10s --timeout=8s --start-period=120s --retries=3 CMD ["python", "-m", "ops.healthcheck"]
ENTRYPOINT ["python", "-m", "ops.container"]
CMD ["web"]

# ---- dev: prod plus the tiny random-weight checkpoints (real ones are mounted read-only at /models) ----
FROM prod AS dev
USER root
RUN mkdir -p /models && python -c "from pathlib import Path; \
from workers.policies.presets import TINY_NAMES, build_tiny_checkpoints; \
build_tiny_checkpoints(Path('/models'), list(TINY_NAMES))" \
    && chmod -R a+rX /models
USER vlaapi
ENV VLAAPI_ENV=development

# The default target is the production image.
FROM prod
