"""Fixtures of the renderer's tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Rendering is many small ops: one thread is about as fast, and immune to a busy second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
