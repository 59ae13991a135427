"""Indexer fixtures: the real MiniLM embedder (loaded once), corpora in tmp folders,
real Qdrant Edge / qdrant-client local-mode stores."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from carafe.indexer.config import IndexerConfig, QdrantConfig, SourceConfig
from carafe.indexer.index import Index
from tests.conftest import REPO

POLICIES = REPO / "examples" / "policies"


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.model_id = inner.model_id
        self.texts = 0

    def encode(self, texts: list[str]):
        self.texts += len(texts)
        return self.inner.encode(texts)


@pytest.fixture(scope="session")
def real_embedder():
    from carafe.indexer.embedding import Embedder

    return Embedder()


@pytest.fixture
def embedder(real_embedder) -> CountingEmbedder:
    return CountingEmbedder(real_embedder)


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    """A private copy of examples/policies to edit freely."""
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


SMALL = [
    "hr/_acl.yaml",
    "hr/salary-bands-2026.md",
    "hr/annual-leave.md",
    "finance/_acl.yaml",
    "finance/price-list-2026.md",
    "finance/travel-expenses.md",
    "legal/_acl.yaml",
    "legal/litigation-hold.md",
    "public/_acl.yaml",
    "public/company-overview.md",
    "engineering/_acl.yaml",
    "engineering/on-call.md",
    "engineering/architecture-overview.html",
]


@pytest.fixture
def small_policies(tmp_path: Path) -> Path:
    """A dozen documents of examples/policies (every department), for tests where size does not matter."""
    target = tmp_path / "small-policies"
    for rel in SMALL:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(POLICIES / rel, target / rel)
    return target


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(params=["edge", "server"])
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def make_index(tmp_path: Path, embedder: CountingEmbedder) -> Iterator[Callable[..., Index]]:
    opened: list[Index] = []

    def make(*sources: SourceConfig, kind: str = "edge", data_dir: Path | None = None) -> Index:
        qdrant = QdrantConfig(url=":memory:") if kind == "server" else QdrantConfig()
        config = IndexerConfig(sources=list(sources), qdrant=qdrant)
        index = Index(config, embedder, data_dir=data_dir or tmp_path / "data")
        opened.append(index)
        return index

    yield make
    for index in opened:
        index.close()
