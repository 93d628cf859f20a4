# Build stage: python:3.11-slim has Python's headers but no C compiler, and
# without one pip skips the optional C scanner (kvproxy.proxy._scan) quietly;
# the proxy would then run on the pure-Python scanner, about 50x slower. gcc
# and the C library headers compile it here, together with any dependency
# that has no wheel for this platform, and only the wheels go on.
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kvproxy ./kvproxy
# Leave out anything built on the host: the check below is about this build.
RUN find kvproxy -name '*.so' -delete \
    && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels kvproxy \
    && rm -rf /wheels
# The image must not ship the slow path: fail the build if the extension is
# missing. -I keeps the working directory and PYTHON* variables out of the
# import, so this checks the installed package.
RUN python -I -c "import kvproxy.proxy._scan"
WORKDIR /app
EXPOSE 6667
CMD ["kvproxy", "--conf", "/etc/kvcloud/kvcloud.conf"]
