#!/usr/bin/env bash
# On the GPU machine, from the repository root: join the wheel parts that
# benchmarks/prepare_gpu_wheels.sh made (sent there one part per call), install them into a target
# folder put first on PYTHONPATH, load onnxruntime's CUDA libraries, and run the check.
#
#   bash benchmarks/gpu_check.sh [benchmarks/gpu_check.py arguments]
#
# GPU_WHEELS: where the parts and SHA256SUMS are (default /tmp/gpu-wheels); ORT_TARGET: the install
# folder (default /tmp/ort-gpu; already installed there, the parts are not needed again).
# Exit codes: gpu_check.py's (0 passed, 1 a check failed, 4 no CUDA), or 5: the parts are missing or damaged.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PARTS=${GPU_WHEELS:-/tmp/gpu-wheels}
TARGET=${ORT_TARGET:-/tmp/ort-gpu}
PY=${PYTHON:-python3}

if [ ! -e "$TARGET/onnxruntime/__init__.py" ]; then
  (
    cd "$PARTS" 2>/dev/null || { echo "gpu_check.sh: no $PARTS: send the parts first (benchmarks/README.md)" >&2; exit 5; }
    missing=$(awk '$2 ~ /^part-/ {print $2}' SHA256SUMS | while read -r p; do [ -e "$p" ] || echo "$p"; done)
    [ -z "$missing" ] || { echo "gpu_check.sh: parts missing in $PARTS: $(echo $missing) (the machine went cold? send them again)" >&2; exit 5; }
    cat part-* > gpu-wheels.tar
    sha256sum -c --quiet --ignore-missing SHA256SUMS || { echo "gpu_check.sh: the joined parts do not match SHA256SUMS" >&2; exit 5; }
    mkdir -p wheels && tar -xf gpu-wheels.tar -C wheels
    $PY -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$TARGET" wheels/*.whl
  )
fi
export PYTHONPATH=$TARGET:$REPO${PYTHONPATH:+:$PYTHONPATH}
cd "$REPO"
$PY -c "import onnxruntime as ort; ort.preload_dlls(); print('onnxruntime', ort.__version__, 'from', ort.__file__, ort.get_available_providers())"
# Does a CUDA session start in a process without torch, as `aitk predict` runs (applied_aitk.runtime calls
# preload_dlls)? If not, say so and put the nvidia-* packages' libraries on LD_LIBRARY_PATH, so that
# the check still measures the rest; the first line is then a finding to fix in toolkit/runtime.py.
PROBE="import sys, tempfile; from pathlib import Path; sys.path.insert(0, 'benchmarks'); import gpu_check; gpu_check.register_plugins(Path(tempfile.mkdtemp())); print('a CUDA session through applied_aitk.runtime got', gpu_check.provider_probe('cuda'))"
if [ -e /proc/driver/nvidia/version ] || [ -e /dev/nvidia0 ]; then
  if ! $PY -c "$PROBE"; then
    LIBS=$($PY -c "import glob, os, nvidia; print(':'.join(sorted({os.path.dirname(p) for base in nvidia.__path__ for p in glob.glob(os.path.join(base, '**', 'lib*.so*'), recursive=True)})))" 2>/dev/null || true)
    echo "gpu_check.sh: FINDING: onnxruntime's CUDA provider does not start through applied_aitk.runtime alone; retrying with LD_LIBRARY_PATH=$LIBS" >&2
    export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    $PY -c "$PROBE" || true
  fi
fi
exec $PY benchmarks/gpu_check.py "$@"
