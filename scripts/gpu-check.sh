#!/usr/bin/env bash
# The GPU check (issue 37): the whole pipeline on the CUDA devices present in a few minutes, printing
# training tokens/s and best-of-1 / best-of-8 samples/s. Without a GPU it says so and exits 0;
# `--device cpu` runs the same steps tiny on the CPU. Details: scripts/gpu_check.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
