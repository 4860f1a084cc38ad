"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a module's tests: their tensors are tiny, two threads only
    contend on a busy 2-core machine, and runs compared bit for bit need one thread count.

    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
