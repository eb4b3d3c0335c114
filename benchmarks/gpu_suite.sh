#!/usr/bin/env bash
# GPU benchmark suite (inference, training step, data pipeline) -> one JSON. See benchmarks/gpu_suite.py.
#   benchmarks/gpu_suite.sh [OUTPUT.json] [--tiny]
# Default output: $OUT/gpu_suite.json (the device machine's result folder), else benchmarks/.cache/gpu_suite.json.
# Python: $PYTHON, else the repository's .venv, else python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repository="$(dirname "$here")"
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
    if [[ -x "$repository/.venv/bin/python" ]]; then python="$repository/.venv/bin/python"; else python=python3; fi
fi

# The repository root is the package `dfd` (pyproject.toml maps it so when installed). A link named `dfd` to it, in
# a temporary folder put first on PYTHONPATH, imports this checkout as it is, with or without an install.
packages="$(mktemp -d)"
trap 'rm -f "$packages/dfd"; rmdir "$packages"' EXIT
ln -s "$repository" "$packages/dfd"
export PYTHONPATH="$packages${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$python" "$here/gpu_suite.py" --json "$output" "${extra[@]}"
