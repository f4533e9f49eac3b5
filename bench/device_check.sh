#!/usr/bin/env bash
# The service's CUDA path, for a machine with an NVIDIA GPU (CI has none): the engine and API tests with
# the settings' default device, `auto`, which picks CUDA there; then the time to each exit on the GPU.
# PYTHON picks the interpreter (default python3). Run from the repository root with the project installed (`pip install -e '.[dev]'`) and the CIFAR-10
# image folder at ../shared/datasets/cifar10/train (the shipped-model tests read it):
#
#   bench/device_check.sh OUT_DIR
#
# Writes OUT_DIR/pytest.log, OUT_DIR/exit_times.{json,png} and OUT_DIR/benchmarks.md (a scratch copy
# of docs/benchmarks.md with the GPU run in its exit-times section).
set -u
python=${PYTHON:-python3}
out=$(realpath -m "${1:?usage: bench/device_check.sh OUT_DIR}")
cd "$(dirname "$0")/.."  # the repository root
mkdir -p "$out"
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
cp docs/benchmarks.md "$out/benchmarks.md"
timeout 300 "$python" -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_app.py tests/test_batch_api.py \
  tests/test_shipped_model.py tests/test_health.py 2>&1 | tee "$out/pytest.log" | tail -n 30
status=${PIPESTATUS[0]}
timeout 300 "$python" -m bench.exit_times --device cuda --out "$out/exit_times.json" --md "$out/benchmarks.md"
exit "$status"
