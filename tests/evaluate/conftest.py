"""Evaluation tests run on tiny models: one intra-op thread avoids oversubscription on small CPUs."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
