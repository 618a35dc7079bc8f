"""Seeds every test; every test carries exactly one kind marker (unit, integration or method)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

KINDS = ("unit", "integration", "method")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test without exactly one kind marker (set ``pytestmark`` in its file or mark the test)."""
    unmarked = [item.nodeid for item in items if sum(item.get_closest_marker(kind) is not None for kind in KINDS) != 1]
    if unmarked:
        raise pytest.UsageError(f"tests need exactly one of the markers {', '.join(KINDS)}: {', '.join(unmarked[:5])}")
