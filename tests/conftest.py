"""Shared test set-up: offline model loading and one converted-model cache per machine."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
# The GGUF -> safetensors conversion runs once per machine; every test reuses it.
MODELS_CACHE = Path(os.environ.setdefault("CARAFE_TEST_MODELS", str(REPO / ".carafe" / "models")))
