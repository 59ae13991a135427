"""carafe.adapters: serving a base model plus LoRA adapters (the engine), and the adapters' lifecycle."""

from carafe.adapters.config import EngineConfig
from carafe.adapters.engine import AdapterInfo, ChatMessage, Engine, GenerationChunk, SamplingParams
from carafe.adapters.local import LocalEngine, create_engine

__all__ = [
    "AdapterInfo",
    "ChatMessage",
    "Engine",
    "EngineConfig",
    "GenerationChunk",
    "LocalEngine",
    "SamplingParams",
    "create_engine",
]
