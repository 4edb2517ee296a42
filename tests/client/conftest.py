"""Fixtures shared by the client tests."""

import pytest

from tests.support.tinymodel import TinyDomain, train_tiny_domain


@pytest.fixture(scope="session")
def tiny_domain(tmp_path_factory: pytest.TempPathFactory) -> TinyDomain:
    """A tiny trained domain; tests that change files must copy it first."""
    return train_tiny_domain(tmp_path_factory.mktemp("tiny"))
