"""carafe.indexer: document sources with ACLs → chunks → embeddings → Qdrant;
incremental sync; permission-filtered hybrid search."""

from carafe.indexer.acl import AccessScope, Acl
from carafe.indexer.index import Index
from carafe.indexer.prompt import Passage, rag_system_prompt, render_context
from carafe.indexer.sync import SyncReport

__all__ = ["AccessScope", "Acl", "Index", "Passage", "SyncReport", "rag_system_prompt", "render_context"]
