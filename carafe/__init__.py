"""Carafe: a hybrid RAG + fine-tuning serving gateway.

The four packages (see ARCHITECTURE.md):

- :mod:`carafe.tuning` — recipes to evaluated, published LoRA adapters
- :mod:`carafe.adapters` — adapter registry and the engines that serve them
- :mod:`carafe.indexer` — documents with ACLs into Qdrant, permission-filtered search
- :mod:`carafe.gateway` — the OpenAI-compatible HTTP face, auth, routing, guards, CLI
"""

__version__ = "0.1.0"
