"""Guard tests share one real MiniLM embedder and one pipeline with the default config."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from carafe.guards import GuardPipeline, GuardsConfig
from carafe.guards.corpora import dataset_path


@pytest.fixture(scope="session")
def embedder():
    import torch

    from carafe.indexer.embedding import Embedder

    torch.set_num_threads(1)  # 2 shared cores: one thread is faster and kinder to neighbours
    return Embedder()


@pytest.fixture(scope="session")
def pipeline(embedder) -> Iterator[GuardPipeline]:
    yield GuardPipeline.from_config(GuardsConfig(), embedder=embedder)


def load_rows(name: str) -> list[dict]:
    with open(dataset_path(name), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
