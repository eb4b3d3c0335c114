#!/usr/bin/env bash
# GPU benchmark suite (inference, training step, data pipeline) -> one JSON. See benchmarks/gpu_suite.py.
#   benchmarks/gpu_suite.sh [OUTPUT.json] [--tiny]
# Default output: $OUT/gpu_suite.json (the device machine's result folder), else benchmarks/.cache/gpu_suite.json.
# Needs no install of this repository: the benchmarks import it from the checkout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
output="${OUT:+$OUT/gpu_suite.json}"
output="${output:-$here/.cache/gpu_suite.json}"
extra=()
for argument in "$@"; do
    case "$argument" in
        --*) extra+=("$argument") ;;
        *) output="$argument" ;;
    esac
done

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$here/../.venv/bin/python" ]]; then python="$here/../.venv/bin/python"; else python=python3; fi
fi

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$python" "$here/gpu_suite.py" --json "$output" "${extra[@]}"
