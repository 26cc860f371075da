import pytest
import torch

from bnonly.registry import data


@pytest.fixture(scope="session")
def mnist_raw():
    return data.load_mnist()


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield
