#!/usr/bin/env bash
# Make the wheels that benchmarks/cuda_check.sh installs on a GPU machine whose Python image lacks the
# runner's config and tracking stack. Run it HERE (a machine with pip access), then carry
# benchmarks/.whl along to the GPU machine.
#
#   bash benchmarks/gpu_wheels.sh            hydra-core, omegaconf, antlr4 (enough for bench.py (d) and (e))
#   bash benchmarks/gpu_wheels.sh --mlflow   also mlflow and what it needs beyond a typical CUDA image
#                                            (for CUDA tests that run the CLI with tracking)
#
# Versions are the ones installed here. GPU_PY (default 3.12) is the GPU machine's Python version.
set -euo pipefail
cd "$(dirname "$0")"
dest=.whl
mkdir -p "$dest"
py=${GPU_PY:-3.12}
ver() { python -c "from importlib.metadata import version; print(version('$1'))"; }

# pure-Python wheels
python -m pip download -q --no-deps -d "$dest" "hydra-core==$(ver hydra-core)" "omegaconf==$(ver omegaconf)"
# antlr4-python3-runtime 4.9.3 (hydra's pin) is published as a source archive only: build its wheel
python -m pip wheel -q --no-deps -w "$dest" "antlr4-python3-runtime==$(ver antlr4-python3-runtime)"

if [ "${1:-}" = "--mlflow" ]; then
  # mlflow's own packages and their requirements that a CUDA image (torch, numpy, pandas, pyarrow,
  # scipy, scikit-learn, matplotlib, requests, click, protobuf, … already there) usually lacks.
  pkgs=(mlflow mlflow-skinny mlflow-tracing alembic sqlalchemy mako sqlparse cachetools databricks-sdk
        google-auth pyasn1 pyasn1-modules fastapi starlette uvicorn flask flask-cors blinker itsdangerous
        gitpython gitdb smmap graphene graphql-core graphql-relay gunicorn huey docker importlib-metadata
        opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions
        pydantic pydantic-core annotated-types typing-inspection python-dotenv prettytable wcwidth skops
        cryptography cffi pycparser)
  specs=()
  for p in "${pkgs[@]}"; do specs+=("$p==$(ver "$p")"); done
  python -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest" "${specs[@]}"
fi
du -sh "$dest"
ls "$dest"
