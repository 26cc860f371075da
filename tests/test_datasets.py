"""Fashion-MNIST (Debian package), CIFAR-10 (a user's pickled batches) and their errors."""
import pickle

import numpy as np
import pytest

from bnonly.engine import resident as tensors
from bnonly.registry import data
from bnonly.cli import main
from bnonly.config.layers import resolve
from bnonly.engine.loop import train


@pytest.mark.skipif(not data.FASHION_MNIST_DIR.is_dir(),
                    reason="Debian package dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_counts():
    raw = data.load_fashion_mnist()
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(raw.y_train).tolist() == [6000] * 10 and np.bincount(raw.y_test).tolist() == [1000] * 10


def test_missing_fashion_mnist_names_the_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "absent")
    data.raw.cache_clear()
    tensors.load.cache_clear()
    assert main(["train", "--dataset", "fashion-mnist", "--width", "8", "--depth", "1"]) == 1
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and err.count("\n") == 1


def write_cifar(root, n=40, seed=0):
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": name.encode()}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return d


def test_cifar10_loader_and_models_on_generated_batches(tmp_path):
    d = write_cifar(tmp_path)
    raw = data.load_cifar10(tmp_path)  # the parent of cifar-10-batches-py works too
    assert raw.x_train.shape == (200, 3, 32, 32) and raw.x_test.shape == (40, 3, 32, 32)
    with open(d / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    assert (raw.x_train[0].reshape(-1) == first[b"data"][0]).all()  # channel-major, as CIFAR stores it
    for model in ("mlp", "lenet5"):
        (r,) = train([resolve(model=model, width=16, depth=2, dataset="cifar10", trainable="bn", max_epochs=1,
                              batch_size=32)], data_dir=str(d))
        assert r.status == "finished" and r.total_params > 0
        assert r.model.blocks[0].op.weight.shape[1] in (3, 3072)  # 3 channels / 3x32x32 inputs


def test_cifar10_errors(tmp_path, capsys):
    assert main(["train", "--dataset", "cifar10", "--width", "8", "--depth", "1"]) == 1
    assert "cifar-10-batches-py" in capsys.readouterr().err
    d = write_cifar(tmp_path)
    (d / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(data.DataError, match="data_batch_3"):
        data.load_cifar10(d)
