import gzip
import struct

import numpy as np
import pytest

from bnonly.engine import resident as tensors
from bnonly.registry import data
from bnonly.cli import main


def test_mnist_counts_order_and_pixels(mnist_raw):
    r = mnist_raw
    assert r.x_train.shape == (60000, 1, 28, 28) and r.x_test.shape == (10000, 1, 28, 28)
    assert r.x_train.dtype == np.uint8
    assert np.bincount(r.y_train).tolist() == data.MNIST_TRAIN_COUNTS
    assert np.bincount(r.y_test).tolist() == data.MNIST_TEST_COUNTS
    assert r.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the original order
    assert r.y_test[:5].tolist() == [7, 2, 1, 0, 4]
    x = r.x_train.astype(np.float64) / 255
    assert abs(x.mean() - 0.1307) < 1e-3 and abs(x.std() - 0.3081) < 1e-3


def test_split_disjoint_fixed_and_sized():
    tr, va = data.split_indices(60000, 0.2, data_seed=0)
    assert len(tr) == 48000 and len(va) == 12000
    assert not set(tr.tolist()) & set(va.tolist())
    tr2, va2 = data.split_indices(60000, 0.2, data_seed=0)
    assert (tr == tr2).all() and (va == va2).all()
    tr3, _ = data.split_indices(60000, 0.2, data_seed=1)
    assert not (tr == tr3).all()
    tr4, va4 = data.split_indices(60000, 0.2, data_seed=0, subset=1000)
    assert len(tr4) == 800 and len(va4) == 200 and not set(tr4.tolist()) & set(va4.tolist())
    tr5, _ = data.split_indices(60000, 0.2, data_seed=0, subset=60000)
    assert len(tr5) == len(tr)
    with pytest.raises(data.DataError, match="more than the 60,000 training images"):
        data.split_indices(60000, 0.2, data_seed=0, subset=60001)  # not silently all of them


def test_subset_beyond_the_data_is_one_line(capsys):
    assert main(["train", "--subset", "70000", "--width", "10", "--depth", "2", "--max-epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "subset=70000 is more than the 60,000" in err and "Traceback" not in err


def test_device_tensors_are_scaled_and_split(mnist_raw):
    d = tensors.load("mnist", 0.2, 0, 0)
    assert d.x_train.shape == (48000, 1, 28, 28) and d.x_val.shape[0] == 12000 and d.x_test.shape[0] == 10000
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0


def write_idx(path, arr, gz=False):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    blob = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)
    return path


def make_idx_dir(tmp_path, mnist_raw, n_train=300, n_test=100, gz=False):
    d = tmp_path / "idx"
    d.mkdir()
    r = mnist_raw
    write_idx(d / "train-images-idx3-ubyte", r.x_train[:n_train, 0], gz)
    write_idx(d / "train-labels-idx1-ubyte", r.y_train[:n_train], gz)
    write_idx(d / "t10k-images-idx3-ubyte", r.x_test[:n_test, 0], gz)
    write_idx(d / "t10k-labels-idx1-ubyte", r.y_test[:n_test], gz)
    return d


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_round_trip(tmp_path, mnist_raw, gz):
    d = make_idx_dir(tmp_path, mnist_raw, gz=gz)
    raw = data.load_idx(d)
    assert (raw.x_train == mnist_raw.x_train[:300]).all() and (raw.y_test == mnist_raw.y_test[:100]).all()
    # an IDX directory named as `mnist` must be the full MNIST
    with pytest.raises(data.DataError, match="300 images"):
        data.load_mnist(d)


def test_truncated_and_corrupt_and_missing_files(tmp_path, mnist_raw, capsys):
    d = make_idx_dir(tmp_path, mnist_raw)
    f = d / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.*truncated"):
        data.load_idx(d)
    f.write_bytes(b"garbage!" * 10)
    with pytest.raises(data.DataError, match="bad magic"):
        data.load_idx(d)
    f.unlink()
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.*not found"):
        data.load_idx(d)
    # through the CLI: one line, no traceback, non-zero exit
    code = main(["train", "--dataset", "idx", "--data-dir", str(d), "--width", "8", "--depth", "1", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "train-images-idx3-ubyte" in err and "Traceback" not in err


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("BNONLY_CACHE", str(tmp_path))
    (tmp_path / "mnist-uint8.npz").write_bytes(b"not an npz")
    raw = data.load_mnist()
    assert len(raw.y_train) == 60000
    with np.load(tmp_path / "mnist-uint8.npz") as z:
        assert z["x_train"].shape == (60000, 1, 28, 28)


def test_the_expected_training_size_is_the_split_without_loading():
    from bnonly.registry.data import expected_train_size, train_size
    assert expected_train_size("mnist", 0.2) == 48000 == train_size("mnist", 0.2)
    assert expected_train_size("mnist", 0.2, 1000) == 800 == train_size("mnist", 0.2, 1000)
    assert expected_train_size("cifar10", 0.1) == 45000
