import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Batch-2 forwards gain nothing from threads, and on a shared CPU thread barriers stall."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
