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


def not_kept(rows):
    """Rows made by hand, stored as runs whose model was not kept (an empty one; a missing model is damage)."""
    return [{**r, "artefact": b""} for r in rows]
