#!/usr/bin/env bash
# `harness bench` on a lent GPU machine, within 420 seconds: SmolLM2-135M's architecture (every part)
# and Llama-3-8B's (the limits and decoding), each a random model built from its config there.
#
#   bash scripts/bench-gpu.sh prepare   # here, once: what the bare machine lacks, into .bench-gpu/ (~50 MB)
#   bash scripts/bench-gpu.sh run       # there: device `run` with carry [".bench-gpu"], timeout_s 450
#
# The machine has no network and its python3 (3.12) holds torch but transformers 5.17 (the harness
# needs >= 5.24) and none of trl, datasets, rapidfuzz, jsonschema, gguf or llama.cpp's server: `prepare`
# downloads their wheels at this checkout's versions, takes the llama.cpp wheel pip compiled here
# (scripts/install.sh), SmolLM2's config and tokenizer (the real weights stay here: throughput does not
# depend on their values) and the built tiny-fitted (the smoke experiment's model). `run` writes each
# bench's JSON to $OUT (else results/bench/), named after the machine; copy them into results/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.bench-gpu
PY=${PYTHON:-.venv/bin/python}
# Needed there beyond the GPU image's packages, each at the version this checkout's environment has.
WHEELS="transformers huggingface.hub tokenizers trl datasets dill multiprocess rapidfuzz jsonschema
jsonschema-specifications referencing rpds-py gguf diskcache uvicorn fastapi sse-starlette starlette-context
starlette pydantic pydantic-settings pydantic.core annotated-types typing-inspection python-dotenv"
# The seconds each bench may take, so that both end within 420 s with the install (about 20 s).
SMOLLM2_SECONDS=290
LLAMA_SECONDS=100

prepare() {
    grep -qx "/$KIT/" .git/info/exclude 2>/dev/null || echo "/$KIT/" >> .git/info/exclude
    rm -rf "$KIT" && mkdir -p "$KIT/wheels" "$KIT/smollm2" "$KIT/cache/models/tiny-fitted"
    local pattern pins
    pattern="^($(echo $WHEELS | tr ' ' '|'))=="
    pins=$("$PY" -m pip freeze | grep -i -E "$pattern")
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$KIT/wheels" $pins
    # llama-cpp-python comes as source only; the wheel pip compiled for this checkout is pure ctypes
    # around its own libraries (built with -DGGML_NATIVE=OFF: CPU code for any x86-64 there)
    find "$("$PY" -m pip cache dir)/wheels" -name 'llama_cpp_python-*.whl' | head -1 \
        | xargs -r -I{} cp {} "$KIT/wheels/"
    local smollm2 fitted
    smollm2=$("$PY" -c "from harness import models; print(models.resolve('smollm2-135m'))")
    cp "$smollm2"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja} \
        "$KIT/smollm2/"
    fitted=$("$PY" -c "from harness import models; print(models.resolve('tiny-fitted'))")
    cp -r "$fitted" "$KIT/cache/models/tiny-fitted/"
    du -sh "$KIT"
}

# Llama-3-8B-Instruct's public config (the hub is out of reach there); eos 128009 is the instruct
# model's end of turn.
llama_config() {
    mkdir -p "$1"
    cat > "$1/config.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
 "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
 "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
 "attention_bias": false, "mlp_bias": false, "tie_word_embeddings": false, "bos_token_id": 128000,
 "eos_token_id": 128009, "initializer_range": 0.02, "torch_dtype": "bfloat16"}
EOF
}

run() {
    [ -d "$KIT/wheels" ] || { echo "no $KIT/: run 'bash scripts/bench-gpu.sh prepare' here and carry $KIT"; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$KIT"/wheels/*.whl
    cp -r "$KIT/cache" /tmp/harness-cache
    export PYTHONPATH=/tmp/site:$PWD HARNESS_CACHE=/tmp/harness-cache HARNESS_CBT_SAMPLE=1 PYTHONUNBUFFERED=1
    local out=${OUT:-results/bench}
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$out/nvidia-smi.txt" || true
    # Each bench writes its JSON after every part: one stopped at its time limit keeps what it finished.
    timeout "$SMOLLM2_SECONDS" python3 -m harness bench --model "$KIT/smollm2" --random-init --device cuda \
        --out "$out/{machine}.json" || echo "smollm2 bench: exit $?"
    # 16 GB of bf16 weights: a workload would write them to disk and load them again in each engine,
    # past the time limit, so Llama-3-8B's architecture is measured on the limits and decoding.
    llama_config /tmp/llama-3-8b
    timeout "$LLAMA_SECONDS" python3 -m harness bench --model /tmp/llama-3-8b --tokenizer "$KIT/smollm2" \
        --random-init --device cuda --only limits,decode --out "$out/{machine}-llama-3-8b.json" \
        || echo "llama-3-8b bench: exit $?"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash scripts/bench-gpu.sh prepare|run"; exit 2 ;;
esac
