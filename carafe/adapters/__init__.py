"""carafe.adapters: serving a base model plus LoRA adapters (the engine), and the adapters' lifecycle.

The door: :class:`Engine` (the protocol) and :func:`create_engine`; :class:`Registry`
and :class:`AdapterManager` for the adapters' versions and resident set. Names are
loaded on first use, so a registry look-up does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carafe._lazy import lazy_getattr
from carafe.adapters.config import EngineConfig
from carafe.adapters.engine import AdapterInfo, ChatMessage, Engine, GenerationChunk, SamplingParams, create_engine

if TYPE_CHECKING:
    from carafe.adapters.local import LocalEngine
    from carafe.adapters.manager import AdapterManager, TrackedEngine
    from carafe.adapters.registry import Registry
    from carafe.adapters.vllm import VLLMEngine

_LAZY = {
    "LocalEngine": "carafe.adapters.local",
    "VLLMEngine": "carafe.adapters.vllm",
    "AdapterManager": "carafe.adapters.manager",
    "TrackedEngine": "carafe.adapters.manager",
    "Registry": "carafe.adapters.registry",
}

__all__ = [
    "AdapterInfo",
    "AdapterManager",
    "ChatMessage",
    "Engine",
    "EngineConfig",
    "GenerationChunk",
    "LocalEngine",
    "Registry",
    "SamplingParams",
    "TrackedEngine",
    "VLLMEngine",
    "create_engine",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
