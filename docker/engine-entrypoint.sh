#!/bin/sh
# Starts vLLM's OpenAI server on the mounted Step-Audio-2-mini with our plugin (installed in the
# image; vLLM loads it through the vllm.general_plugins entry point). Sizes come from the env.
# The gateway sends each prompt already rendered (engine/remote.py) with a pass-through chat
# template in the request, which vLLM accepts only with --trust-request-chat-template.
set -eu
exec python3 -m vllm.entrypoints.openai.api_server \
  --model "${MODEL_DIR:-/models/Step-Audio-2-mini}" \
  --served-model-name "${SERVED_MODEL_NAME:-step-audio-2-mini}" \
  --host 0.0.0.0 --port "${PORT:-8000}" \
  --tensor-parallel-size "${TENSOR_PARALLEL_SIZE:-1}" \
  --max-model-len "${MAX_MODEL_LEN:-16384}" \
  --max-num-seqs "${MAX_NUM_SEQS:-32}" \
  --gpu-memory-utilization "${GPU_MEMORY_UTILIZATION:-0.85}" \
  --dtype bfloat16 \
  --trust-request-chat-template \
  "$@"
