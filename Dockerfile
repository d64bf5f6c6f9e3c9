# syntax=docker/dockerfile:1
# chatsys image: one image for P (gateway), A (users chat) and B (files); the verb picks the process.
# The product only: .dockerignore leaves chatsys/lab out of the build context and the runtime
# installs no extra, so neither the lab's code nor its tools (matplotlib, psutil, Locust) are in
# it; `chatsys lab` there says so. The loadtest stage adds Locust (the `load` extra), not the lab.
#   docker build -t chatsys:0.1.0 .                                # runtime (default target)
#   docker build --target loadtest -t chatsys-loadtest:0.1.0 .    # + Locust, for components/loadtest
# Kubernetes manifests refer to the names "chatsys" and "chatsys-loadtest"; the real registry/tag is
# set once, in kustomize `images:` (kustomize/base and kustomize/components/loadtest).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: wheels for the package, its dependencies and the load extra (compilers stay here) ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY chatsys ./chatsys
RUN pip wheel --wheel-dir /wheels ".[load]"

# --- runtime: slim Python, the package installed from wheels without extras, nothing else ---------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 CHATSYS_DATA_DIR=/data CHATSYS_LOG_FORMAT=json
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels chatsys \
    && groupadd --system --gid 10001 chatsys \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home chatsys \
    && install -d -o 10001 -g 10001 /data
WORKDIR /data
USER 10001:10001
EXPOSE 8080 50051 50052 9100 9101
ENTRYPOINT ["chatsys"]
# `docker run -p 8080:8080 chatsys:0.1.0` runs P, A and B together; Kubernetes passes
# `gateway`, `users chat` or `files` as args instead.
CMD ["all", "--port", "8080"]

# --- loadtest: the runtime plus Locust and the load extra (locustfiles come from a ConfigMap) -----
FROM runtime AS loadtest
USER 0:0
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "chatsys[load]"
USER 10001:10001
ENTRYPOINT ["locust"]
CMD ["--help"]

# The default target is the last stage, so name the runtime again for a plain `docker build .`.
FROM runtime AS final
