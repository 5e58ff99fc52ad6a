# Tideway: one image, two roles (`tideway serve`, `tideway consume`); see docs/deploy.md.
#
# The builder and the runtime use the same Python build on purpose: the virtual environment's
# `python` is a symlink to /usr/local/bin/python3.11 of the base, so the venv copied into the
# runtime stage works unchanged. The builder is the full bookworm variant because it compiles
# the writer's C line scanner (gcc and the Python headers); the runtime stays slim.
# Pin the digests when you release (`python:3.11-bookworm@sha256:…`).

FROM python:3.11-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv

RUN pip install --no-cache-dir uv==0.13.8

WORKDIR /src

# Runtime dependencies only: no extras (moto is the `demo` extra), no dependency groups (dev,
# bench, deploy). First from the lock file alone: this layer is reused until uv.lock changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself, as a regular (non-editable) install, so /src is not needed at run time;
# this compiles the C extensions (service/_scan.c, service/_detect.c, service/_fields.c).
# Shared objects lose their symbol tables (about
# 85 MB), except the auditwheel-vendored ones in *.libs/, which strip corrupts (numpy's OpenBLAS
# then fails to load). Packages' own test suites and C headers (about 35 MB) are not needed to
# run. The imports of serve, consume, the console and the lazily loaded sinks are tried last, so
# a broken environment fails the build rather than the first flush.
COPY service/ ./service/
RUN uv sync --frozen --no-dev --no-editable \
    && find /opt/venv \( -name '*.so' -o -name '*.so.*' \) -type f -not -path '*.libs/*' \
       -exec strip --strip-unneeded {} + \
    && find /opt/venv/lib/python3.11/site-packages -mindepth 2 -type d \
       \( -name tests -o -name include \) -prune -exec rm -rf {} + \
    && find /opt/venv \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' -o -name '*.hpp' \) \
       -type f -delete \
    && /opt/venv/bin/python -I -c "import service.cli, service.ingest.server, service.consume.runner, service.resources, service.sink.columns, service.sink.iceberg, service.console.app, service._scan, service._detect, service._fields"


FROM python:3.11-slim-bookworm AS runtime

# Bytecode was compiled in the builder; the root filesystem may be read-only (the ECS task
# definitions set readonlyRootFilesystem), so never try to write .pyc files at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed, high uid/gid (not a --system id, which stops at 999) so the ECS task definitions
# and volume permissions can name it: "10001:10001".
RUN groupadd --gid 10001 tideway \
    && useradd --uid 10001 --gid tideway --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin tideway

COPY --from=builder /opt/venv /opt/venv

USER 10001:10001

# 8080: `serve` (ingest, /healthz, /readyz, /metrics); 9090: `consume` (/healthz, /readyz, /metrics, /status).
EXPOSE 8080 9090 4317

# Liveness for `docker run` and compose (ECS uses the task definition's own healthCheck).
# TIDEWAY_PORT wins when set; otherwise try serve's default 8080, then consume's 9090.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\nport = os.environ.get('TIDEWAY_PORT')\nfor p in [port] if port else ['8080', '9090']:\n    try:\n        urllib.request.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=3)\n        sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)"]

# Exec form: `tideway` (the venv's console script, which execs nothing further) is PID 1 and
# receives SIGTERM directly; it installs its own SIGTERM/SIGINT handlers to drain and exit
# (DESIGN §2, §5). No init process is baked in: Tideway starts no child processes, so there are
# no zombies to reap, and ECS adds one anyway (linuxParameters.initProcessEnabled in deploy/).
# With plain Docker, `docker run --init` does the same.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tideway"]
CMD ["serve"]
