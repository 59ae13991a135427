"""Fixtures of the tuning tests: a real OpenAI-compatible teacher server on a free local port."""

from __future__ import annotations

import pytest

from carafe.tuning.template_teacher import teacher_app
from tests.servers import serve_in_thread


@pytest.fixture(scope="module")
def teacher_url():
    server = serve_in_thread(teacher_app("good"))
    yield f"{server.url}/v1"
    server.stop()


@pytest.fixture(scope="module")
def junk_teacher_url():
    server = serve_in_thread(teacher_app("junk"))
    yield f"{server.url}/v1"
    server.stop()
