#!/usr/bin/env bash
# The GPU checks of issue 5 in one script, for whoever has a machine with a CUDA device (a few minutes):
#   1. the CUDA tests:       python -m pytest -q -m cuda
#   2. the GPU benchmark:    case (d), Rosenbrock n = 1e8 float32 with backend.compile=true, the runner's
#                            step against the bare compiled step and the bandwidth floor; and case (e),
#                            the finite-difference gradient, on the GPU.
#
#   bash benchmarks/cuda_check.sh [OUTDIR]      (OUTDIR: $OUT if set, else benchmarks/out)
#
# Python packages that a GPU image lacks (hydra-core, omegaconf, antlr4; mlflow for tests that run the
# CLI) are installed first from benchmarks/.whl when it holds wheels (benchmarks/gpu_wheels.sh makes
# them on a machine with pip access). Everything printed is also written under OUTDIR.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-benchmarks/out}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

if ls benchmarks/.whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/runner-site benchmarks/.whl/*.whl \
    && export PYTHONPATH="/tmp/runner-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: not available"
  "$PY" - <<'PYEOF'
import importlib.util, platform
print("python", platform.python_version())
missing = [m for m in ("torch", "hydra", "omegaconf", "mlflow", "pytest") if importlib.util.find_spec(m) is None]
if "torch" not in missing:
    import torch
    print("torch", torch.__version__, "cuda available:", torch.cuda.is_available(),
          torch.cuda.get_device_name() if torch.cuda.is_available() else "")
print("missing Python packages:", ", ".join(missing) or "none",
      "(make wheels with benchmarks/gpu_wheels.sh; see docs/speed.md)" if missing else "")
PYEOF
} 2>&1 | tee "$out/device.txt"

echo "== 1. CUDA tests: python -m pytest -q -m cuda" | tee "$out/cuda-tests.log"
timeout 240 "$PY" -m pytest -q -m cuda -p no:cacheprovider 2>&1 | tee -a "$out/cuda-tests.log"
tests_rc=${PIPESTATUS[0]}

echo "== 2. GPU benchmark: bench.py --only d,e --e-device cuda" | tee "$out/bench-gpu.log"
timeout 360 "$PY" benchmarks/bench.py --only d,e --e-device cuda --repeat 3 --json "$out/bench-gpu.json" 2>&1 | tee -a "$out/bench-gpu.log"
bench_rc=${PIPESTATUS[0]}

case $tests_rc in
  0) tests="passed" ;;
  5) tests="none collected (no test is marked cuda)" ;;
  124) tests="TIMED OUT after 240 s" ;;
  *) tests="FAILED (exit $tests_rc)" ;;
esac
echo "cuda_check: CUDA tests $tests; benchmark exit $bench_rc$([ "$bench_rc" = 124 ] && echo ' (timed out)'); logs and JSON in $out"
if [ "$tests_rc" != 0 ] && [ "$tests_rc" != 5 ]; then exit "$tests_rc"; fi
exit "$bench_rc"
