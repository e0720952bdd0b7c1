"""Data sets: each loader reads small files that these tests write in the real formats."""

from __future__ import annotations

import csv
import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from archlab.core import DataError
from archlab.data import (
    DATASETS,
    Augment,
    DataInfo,
    Split,
    iterate_batches,
    load_dataset,
    num_batches,
)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg, msg
    return msg


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_range():
    ds = load_dataset("digits")
    assert ds.info.name == "digits" and ds.info.task == "classify"
    assert ds.info.input_shape == (1, 8, 8) and ds.info.input_dtype == "float"
    assert ds.info.num_classes == 10 and ds.info.class_names == tuple("0123456789")
    assert ds.info.vars() == {"num_classes": 10}
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1258, 180, 359)
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8) and split.x.is_contiguous()
        assert split.x.min() >= 0 and split.x.max() <= 1
    assert ds.train.x.max() == 1.0  # 16/16 occurs


def test_digits_split_is_fixed_and_stratified():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=123)
    for sa, sb in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)
    total = torch.cat([a.train.y, a.val.y, a.test.y]).bincount()
    for split in (a.train, a.val, a.test):
        expected = total * len(split) / 1797
        assert (split.y.bincount(minlength=10) - expected).abs().max() <= 1.5
    # disjoint: every image appears once across the three splits
    all_x = torch.cat([a.train.x, a.val.x, a.test.x]).flatten(1)
    from sklearn.datasets import load_digits

    ref = torch.tensor(load_digits().data, dtype=torch.float32) / 16
    assert sorted(map(tuple, all_x.tolist())) == sorted(map(tuple, ref.tolist()))


def test_digits_cache_is_not_shared_with_callers():
    a = load_dataset("digits")
    a.train.x.zero_()
    assert load_dataset("digits").train.x.max() == 1.0


def test_datainfo_round_trip():
    info = load_dataset("digits").info
    assert DataInfo.from_dict(info.to_dict()) == info
    assert DataInfo("t", (4,), "long", "classify", 3, vocab_size=50).vars() == {
        "num_classes": 3, "vocab_size": 50}
    assert DataInfo("r", (4,), "float", "regress", None).vars() == {}


def test_unknown_dataset_suggests_close_names():
    with pytest.raises(DataError) as e:
        load_dataset("mnsit")
    msg = one_line(e)
    assert "'mnsit'" in msg and "'mnist'" in msg
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "csv", "synthetic"} <= set(DATASETS)


def test_bad_arguments():
    with pytest.raises(DataError):
        load_dataset("digits", val_fraction=1.0)
    with pytest.raises(DataError):
        load_dataset("digits:foo")
    with pytest.raises(DataError):
        load_dataset("digits", target="y")


# --------------------------------------------------------------------------- MNIST


def write_idx(path: Path, arr: np.ndarray, *, magic: int | None = None, gz: bool = False,
              cut: int = 0) -> Path:
    """An IDX file: magic (0x0000080N for uint8, N dims), big-endian dims, the raw bytes."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    magic = 0x0800 | arr.ndim if magic is None else magic
    data = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    data = data[: len(data) - cut]
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


N_TRAIN, N_TEST = 50, 20


def mnist_arrays(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Image i carries its id in pixel (0, 0) and a 255 at (i % 28, 27 - i % 28); label i % 10."""
    x = np.zeros((n, 28, 28), np.uint8)
    ids = np.arange(n) + offset
    x[:, 0, 0] = ids
    x[np.arange(n), np.arange(n) % 28, 27 - np.arange(n) % 28] = 255
    return x, (ids % 10).astype(np.uint8)


def write_mnist(folder: Path, gz: bool | tuple[bool, ...] = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    gzs = gz if isinstance(gz, tuple) else (gz,) * 4
    (xtr, ytr), (xte, yte) = mnist_arrays(N_TRAIN, 0), mnist_arrays(N_TEST, 100)
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for name, arr, z in zip(names, (xtr, ytr, xte, yte), gzs, strict=True):
        write_idx(folder / name, arr, gz=z)
    return folder


def check_mnist_split(split: Split, offset: int) -> None:
    assert split.x.shape[1:] == (1, 28, 28) and split.x.dtype == torch.float32
    assert split.y.dtype == torch.int64 and split.x.is_contiguous()
    assert split.x.min() >= 0 and split.x.max() <= 1
    ids = torch.round(split.x[:, 0, 0, 0] * 255).long()
    assert torch.equal(split.y, ids % 10)  # labels stay aligned with their images
    r = (ids - offset) % 28
    assert torch.all(split.x[torch.arange(len(split)), 0, r, 27 - r] == 1.0)


@pytest.mark.parametrize("gz", [False, True, (True, False, False, True)])
def test_mnist_reads_idx_files(tmp_path, gz):
    ds = load_dataset(f"mnist:{write_mnist(tmp_path / 'm', gz)}")
    assert ds.info.input_shape == (1, 28, 28) and ds.info.num_classes == 10
    assert ds.info.source == str(tmp_path / "m")
    assert len(ds.train) == 45 and len(ds.val) == 5 and len(ds.test) == N_TEST
    check_mnist_split(ds.train, 0)
    check_mnist_split(ds.val, 0)
    check_mnist_split(ds.test, 100)
    train_ids = torch.round(torch.cat([ds.train.x, ds.val.x])[:, 0, 0, 0] * 255).long()
    assert sorted(train_ids.tolist()) == list(range(N_TRAIN))
    assert ds.test.x[3, 0, 0, 0] == pytest.approx(103 / 255)  # the test set keeps file order
    assert ds.val.y.bincount().max() == 1  # stratified: no class twice in 5 val samples


def test_mnist_val_split_does_not_move_with_seed(tmp_path):
    folder = write_mnist(tmp_path)
    a, b = load_dataset(f"mnist:{folder}", seed=0), load_dataset(f"mnist:{folder}", seed=7)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    c = load_dataset(f"mnist:{folder}", val_fraction=0.2)
    assert len(c.val) == 10 and len(c.train) == 40


def test_fashion_mnist_and_default_locations(tmp_path, monkeypatch):
    write_mnist(tmp_path / "env" / "fashion-mnist", gz=True)
    monkeypatch.setenv("ARCHLAB_DATA", str(tmp_path / "env"))
    ds = load_dataset("fashion-mnist")
    assert ds.info.name == "fashion-mnist" and ds.info.class_names[0] == "T-shirt/top"
    assert ds.info.class_names[-1] == "Ankle boot" and len(ds.info.class_names) == 10
    monkeypatch.delenv("ARCHLAB_DATA")
    write_mnist(tmp_path / "root" / "mnist")
    assert len(load_dataset("mnist", root=tmp_path / "root").test) == N_TEST


def test_mnist_missing_file_says_where_to_put_it(tmp_path):
    folder = write_mnist(tmp_path)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as e:
        load_dataset(f"mnist:{folder}")
    msg = one_line(e)
    assert str(folder / "t10k-labels-idx1-ubyte") + "(.gz)" in msg
    assert f"in {folder}" in msg and "nothing is downloaded" in msg


def test_mnist_missing_folder(tmp_path, monkeypatch):
    with pytest.raises(DataError) as e:
        load_dataset(f"mnist:{tmp_path / 'nope'}")
    assert str(tmp_path / "nope") in one_line(e)
    monkeypatch.delenv("ARCHLAB_DATA", raising=False)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", root=tmp_path / "missing")
    msg = one_line(e)
    assert "ARCHLAB_DATA" in msg and str(tmp_path / "missing" / "mnist") in msg


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_file(tmp_path, gz):
    folder = write_mnist(tmp_path)
    x, _ = mnist_arrays(N_TRAIN, 0)
    (folder / "train-images-idx3-ubyte").unlink()
    bad = write_idx(folder / "train-images-idx3-ubyte", x, gz=gz, cut=100)
    with pytest.raises(DataError) as e:
        load_dataset(f"mnist:{folder}")
    msg = one_line(e)
    assert str(bad) in msg and "truncated" in msg


def test_mnist_truncated_gzip_stream(tmp_path):
    folder = write_mnist(tmp_path, gz=True)
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError) as e:
        load_dataset(f"mnist:{folder}")
    assert str(path) in one_line(e)


def test_mnist_trailing_bytes(tmp_path):
    folder = write_mnist(tmp_path)
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError) as e:
        load_dataset(f"mnist:{folder}")
    assert str(path) in one_line(e) and "trailing" in str(e.value)


def test_mnist_wrong_magic(tmp_path):
    folder = write_mnist(tmp_path)
    _, y = mnist_arrays(N_TRAIN, 0)
    write_idx(folder / "train-labels-idx1-ubyte", y, magic=0x00000803)
    with pytest.raises(DataError) as e:
        load_dataset(f"mnist:{folder}")
    msg = one_line(e)
    assert str(folder / "train-labels-idx1-ubyte") in msg and "magic" in msg
    assert "0x00000801" in msg and "0x00000803" in msg


def test_mnist_count_mismatch(tmp_path):
    folder = write_mnist(tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(N_TRAIN - 1, np.uint8))
    with pytest.raises(DataError) as e:
        load_dataset(f"mnist:{folder}")
    assert f"{N_TRAIN} images but {N_TRAIN - 1} labels" in one_line(e)


# --------------------------------------------------------------------------- CIFAR-10

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck"]
PER_BATCH, N_CIFAR_TEST = 6, 5
R_PIX, G_PIX, B_PIX = (1, 2), (3, 4), (5, 6)  # (row, col) set in each channel


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's cPickle wrote its str (SHORT_BINSTRING/BINSTRING),
    which is what the real CIFAR-10 batches contain."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2str
    dispatch[bytes] = save_py2str


def dump(obj, protocol) -> bytes:
    if protocol == "py2":
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(obj)
        # numpy 1.x (which wrote the real files) lived at numpy.core
        return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    return pickle.dumps(obj, protocol=protocol)


def cifar_batch(ids: np.ndarray) -> dict:
    """Rows laid out as the real batches: 1024 red, then 1024 green, then 1024 blue values."""
    data = np.zeros((len(ids), 3072), np.uint8)
    data[:, 0] = ids  # red (0, 0) carries the sample id
    data[:, 0 * 1024 + R_PIX[0] * 32 + R_PIX[1]] = 200
    data[:, 1 * 1024 + G_PIX[0] * 32 + G_PIX[1]] = 150
    data[:, 2 * 1024 + B_PIX[0] * 32 + B_PIX[1]] = 100
    return {b"batch_label": b"batch", b"labels": [int(i) % 10 for i in ids], b"data": data,
            b"filenames": [b"f%d.png" % i for i in ids]}


def write_cifar(folder: Path, protocol="py2", meta=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(5):
        ids = np.arange(PER_BATCH) + b * PER_BATCH
        (folder / f"data_batch_{b + 1}").write_bytes(dump(cifar_batch(ids), protocol))
    (folder / "test_batch").write_bytes(dump(cifar_batch(np.arange(N_CIFAR_TEST) + 100), protocol))
    if meta:
        m = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_cases_per_batch": 6}
        (folder / "batches.meta").write_bytes(dump(m, protocol))
    return folder


def tar_folder(folder: Path, tar_path: Path) -> Path:
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return tar_path


def check_cifar_split(split: Split) -> None:
    assert split.x.shape[1:] == (3, 32, 32) and split.x.dtype == torch.float32
    assert split.y.dtype == torch.int64 and split.x.is_contiguous()
    assert split.x.min() >= 0 and split.x.max() <= 1
    ids = torch.round(split.x[:, 0, 0, 0] * 255).long()
    assert torch.equal(split.y, ids % 10)
    for c, (r, col), v in ((0, R_PIX, 200), (1, G_PIX, 150), (2, B_PIX, 100)):
        assert torch.allclose(split.x[:, c, r, col], torch.tensor(v / 255))
    # nothing else is set: each channel holds exactly its one marked pixel (+ the id pixel)
    assert int((split.x[:, 1:] > 0).sum()) == 2 * len(split)


@pytest.mark.parametrize("protocol", ["py2", 4, 5])
def test_cifar_folder(tmp_path, protocol):
    folder = write_cifar(tmp_path / "cifar-10-batches-py", protocol)
    for uri in (f"cifar10:{folder}", f"cifar10:{tmp_path}"):  # the batches, or their parent
        ds = load_dataset(uri)
        assert ds.info.input_shape == (3, 32, 32) and ds.info.num_classes == 10
        assert ds.info.class_names == tuple(CIFAR_NAMES) and ds.info.source == str(folder)
        assert len(ds.train) + len(ds.val) == 5 * PER_BATCH and len(ds.val) == 3
        assert len(ds.test) == N_CIFAR_TEST
        for split in (ds.train, ds.val, ds.test):
            check_cifar_split(split)
        ids = torch.round(torch.cat([ds.train.x, ds.val.x])[:, 0, 0, 0] * 255).long()
        assert sorted(ids.tolist()) == list(range(5 * PER_BATCH))


def test_cifar_tar_gz_is_read_without_extracting(tmp_path):
    folder = write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    (tmp_path / "data").mkdir()
    tar = tar_folder(folder, tmp_path / "data" / "cifar-10-python.tar.gz")
    for uri in (f"cifar10:{tar}", f"cifar10:{tar.parent}"):
        ds = load_dataset(uri)
        assert ds.info.source == str(tar) and ds.info.class_names == tuple(CIFAR_NAMES)
        for split in (ds.train, ds.val, ds.test):
            check_cifar_split(split)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-python.tar.gz"]


def test_cifar_without_meta_uses_the_standard_names(tmp_path):
    ds = load_dataset(f"cifar10:{write_cifar(tmp_path, meta=False)}")
    assert ds.info.class_names == tuple(CIFAR_NAMES)


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("in_tar", [False, True])
@pytest.mark.parametrize("protocol", ["py2", 4])
def test_cifar_malicious_pickle_is_refused_not_run(tmp_path, in_tar, protocol):
    folder = write_cifar(tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "pwned"
    batch = cifar_batch(np.arange(PER_BATCH))
    batch[b"data"] = Evil(marker)
    (folder / "data_batch_1").write_bytes(dump(batch, protocol))
    target = tar_folder(folder, tmp_path / "c.tar.gz") if in_tar else folder
    with pytest.raises(DataError) as e:
        load_dataset(f"cifar10:{target}")
    msg = one_line(e)
    assert "data_batch_1" in msg and str(target) in msg and "system" in msg
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps({b"data": eval}),  # builtins.eval
    pickle.dumps({b"data": np.zeros(3, dtype=object)}),  # needs more than the allow-list
    b"\x80\x02}q\x00(U\x04data",  # cut off mid-stream
    b"not a pickle at all",
])
def test_cifar_corrupt_or_unsafe_pickles(tmp_path, payload):
    folder = write_cifar(tmp_path)
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(DataError) as e:
        load_dataset(f"cifar10:{folder}")
    assert str(folder / "test_batch") in one_line(e)


def test_cifar_wrong_contents_and_missing_files(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8),
                                                        b"labels": [0, 1]}))
    with pytest.raises(DataError) as e:
        load_dataset(f"cifar10:{folder}")
    assert str(folder / "data_batch_3") in one_line(e) and "3072" in str(e.value)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError) as e:
        load_dataset(f"cifar10:{folder}")
    msg = one_line(e)
    assert str(folder / "data_batch_3") in msg and "nothing is downloaded" in msg
    with pytest.raises(DataError) as e:
        load_dataset(f"cifar10:{tmp_path / 'empty'}")
    assert str(tmp_path / "empty") in one_line(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        load_dataset(f"cifar10:{tmp_path / 'empty'}")
    assert "cifar-10-python.tar.gz" in one_line(e)


def test_cifar_corrupt_tar(tmp_path):
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(gzip.compress(b"x" * 1000)[:-5])
    with pytest.raises(DataError) as e:
        load_dataset(f"cifar10:{bad}")
    assert str(bad) in one_line(e)


# --------------------------------------------------------------------------- CSV

COLORS = ["red", "green", "blue"]


def write_csv(path: Path, n: int = 60, extra_rows: list[list[str]] = ()) -> Path:
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["height", "count", "color", "price", "grade", "animal"])
        for i in range(n):
            w.writerow([f"{rng.normal(170, 10):.3f}", str(int(rng.integers(0, 1000))),
                        COLORS[i % 3], f"{rng.normal(50, 5):.4f}", str([10, 2, 3][i % 3]),
                        ["cat", "dog"][i % 2]])
        w.writerows(extra_rows)
    return path


def test_csv_classify_with_numeric_and_categorical(tmp_path):
    path = write_csv(tmp_path / "pets.csv")
    ds = load_dataset(f"csv:{path}")
    info = ds.info
    assert info.name == f"csv:{path}" and info.source == str(path)
    assert info.task == "classify" and info.class_names == ("cat", "dog") and info.num_classes == 2
    # height, count, price, grade are numeric (1 each); color one-hot (3): 7 features
    assert info.input_shape == (7,) and info.input_dtype == "float"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (42, 6, 12)
    x = ds.train.x
    assert x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    numeric, onehot = x[:, [0, 1, 5, 6]], x[:, [2, 3, 4]]  # header order: color is 2..4
    assert torch.allclose(numeric.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(numeric.std(0, correction=0), torch.ones(4), atol=1e-4)
    assert set(onehot.unique().tolist()) == {0.0, 1.0} and torch.all(onehot.sum(1) == 1)
    assert ds.train.y.bincount().tolist() == [21, 21]  # stratified
    assert ds.test.y.bincount().tolist() == [6, 6]


def test_csv_feature_values_follow_the_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,color,y\n" + "".join(f"{i},{COLORS[i % 3]},{i % 2}\n" for i in range(30)))
    ds = load_dataset(f"csv:{path}")
    all_x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    all_y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
    # the ranking of 'a' survives standardisation, and 'a' decides the label and the colour
    order = all_x[:, 0].argsort()
    assert torch.equal(all_y[order], torch.arange(30) % 2)
    assert torch.equal(all_x[order, 1:].argmax(1), torch.tensor([[2, 1, 0][i % 3] for i in range(30)]))


def test_csv_unknown_category_becomes_zeros(tmp_path):
    path = write_csv(tmp_path / "p.csv", extra_rows=[["171", "5", "purple", "50", "2", "cat"]])
    for seed in range(50):
        ds = load_dataset(f"csv:{path}", seed=seed)
        if ds.info.input_shape == (7,):  # 'purple' did not land in train
            held_out = torch.cat([ds.val.x, ds.test.x])[:, [2, 3, 4]]
            assert int((held_out.sum(1) == 0).sum()) == 1
            return
    pytest.fail("purple always landed in train")


def test_csv_integer_target_with_few_values_is_classify(tmp_path):
    ds = load_dataset(f"csv:{write_csv(tmp_path / 'g.csv')}", target="grade")
    assert ds.info.task == "classify" and ds.info.class_names == ("2", "3", "10")
    assert ds.info.input_shape == (8,)  # animal became a categorical feature (2)


def test_csv_regress_keeps_raw_targets(tmp_path):
    path = write_csv(tmp_path / "r.csv")
    ds = load_dataset(f"csv:{path}", target="price")
    info = ds.info
    assert info.task == "regress" and info.num_classes is None and info.class_names is None
    assert info.vars() == {}
    assert ds.train.y.dtype == torch.float32 and ds.train.y.ndim == 1
    with path.open() as f:
        raw = sorted(float(r["price"]) for r in csv.DictReader(f))
    got = sorted(torch.cat([ds.train.y, ds.val.y, ds.test.y]).tolist())
    assert np.allclose(got, raw, atol=1e-3)
    ds2 = load_dataset(f"csv:{path}", target="count")  # integers, many distinct values
    assert ds2.info.task == "regress"


def test_csv_split_is_deterministic_by_seed(tmp_path):
    path = write_csv(tmp_path / "d.csv")
    a, b, c = (load_dataset(f"csv:{path}", seed=s) for s in (1, 1, 2))
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.test.x, c.test.x)


def test_csv_bare_path_and_root(tmp_path):
    write_csv(tmp_path / "d.csv")
    assert load_dataset(str(tmp_path / "d.csv")).info.task == "classify"
    assert load_dataset("csv:d.csv", root=tmp_path).info.source == str(tmp_path / "d.csv")


def test_csv_missing_target_column(tmp_path):
    path = write_csv(tmp_path / "t.csv")
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{path}", target="anima")
    msg = one_line(e)
    assert str(path) in msg and "'anima'" in msg and "'animal'" in msg


def test_csv_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{tmp_path / 'no.csv'}")
    assert str(tmp_path / "no.csv") in one_line(e)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b,y\n1,2,0\n3,1\n")
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{ragged}")
    assert str(ragged) in one_line(e) and "line 3" in str(e.value)
    blank = tmp_path / "blank.csv"
    blank.write_text("a,y\n1,0\n2,\n3,1\n")
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{blank}")
    assert "line 3" in one_line(e)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_images_are_deterministic_and_learnable():
    uri = "synthetic:images?n=600&shape=1x12x12&classes=3"
    a, b, c = load_dataset(uri, seed=0), load_dataset(uri, seed=0), load_dataset(uri, seed=1)
    assert a.info.input_shape == (1, 12, 12) and a.info.num_classes == 3
    assert (len(a.train), len(a.val), len(a.test)) == (420, 60, 120)
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    # a nearest-class-mean classifier fitted on train must do far better than chance on test
    means = torch.stack([a.train.x[a.train.y == k].mean(0) for k in range(3)]).flatten(1)
    pred = torch.cdist(a.test.x.flatten(1), means).argmin(1)
    assert (pred == a.test.y).float().mean() > 0.9
    assert load_dataset("synthetic:images").info.input_shape == (1, 28, 28)


def test_synthetic_bad_options():
    for uri in ("synthetic:text", "synthetic:images?n=10&size=3", "synthetic:images?shape=1xa"):
        with pytest.raises(DataError) as e:
            load_dataset(uri)
        one_line(e)


# --------------------------------------------------------------------------- batching


def counting_split(n: int) -> Split:
    return Split(torch.arange(n, dtype=torch.float32)[:, None] * 10, torch.arange(n))


@pytest.mark.parametrize("n,bs", [(10, 4), (12, 4), (1, 8), (100, 7)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_iterate_batches_covers_each_sample_once(n, bs, drop_last):
    split, g = counting_split(n), torch.Generator().manual_seed(0)
    batches = list(iterate_batches(split, bs, shuffle=True, generator=g, drop_last=drop_last))
    assert len(batches) == num_batches(n, bs, drop_last)
    assert all(len(y) == bs for _, y in batches[:-1] if batches)
    seen = torch.cat([y for _, y in batches]) if batches else torch.empty(0, dtype=torch.long)
    assert len(seen) == (n // bs * bs if drop_last else n)
    assert len(set(seen.tolist())) == len(seen)  # no sample twice
    for x, y in batches:
        assert torch.equal(x[:, 0], y.float() * 10) and x.is_contiguous()  # x and y aligned


def test_iterate_batches_shuffles_differently_each_epoch_and_reproducibly():
    split = counting_split(50)

    def epochs(seed):
        g = torch.Generator().manual_seed(seed)
        return [torch.cat([y for _, y in iterate_batches(split, 8, shuffle=True, generator=g)])
                for _ in range(2)]

    e1, e2 = epochs(0)
    assert sorted(e1.tolist()) == sorted(e2.tolist()) == list(range(50))
    assert not torch.equal(e1, e2)
    assert all(torch.equal(a, b) for a, b in zip(epochs(0), [e1, e2], strict=True))


def test_iterate_batches_in_order_without_shuffle():
    split = counting_split(10)
    ys = [y.tolist() for _, y in iterate_batches(split, 4, shuffle=False, device="cpu")]
    assert ys == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert num_batches(10, 4, False) == 3 and num_batches(10, 4, True) == 2
    with pytest.raises(DataError):
        next(iterate_batches(split, 0, shuffle=False))


def test_augment_hflip_flips_about_half():
    x = torch.rand(64, 3, 5, 7)
    out = Augment(hflip=True)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same | flipped) and 16 < int(flipped.sum()) < 48


def test_augment_crop_is_a_shifted_window_of_the_padded_image():
    p, x = 2, torch.rand(16, 2, 6, 6) + 1  # +1: real pixels are never 0, padding is
    out = Augment(crop_padding=p)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.is_contiguous()
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = set()
    for i in range(16):
        found = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                 if torch.equal(out[i], padded[i, :, dy : dy + 6, dx : dx + 6])]
        assert found, f"image {i} is not a crop"
        offsets.add(found[0])
    assert len(offsets) > 1


def test_augment_in_iterate_batches_and_settings():
    split = Split(torch.rand(20, 1, 4, 4), torch.arange(20))
    aug = Augment(crop_padding=1, hflip=True)
    g = torch.Generator().manual_seed(0)
    for x, _ in iterate_batches(split, 6, shuffle=True, generator=g, augment=aug):
        assert x.shape[1:] == (1, 4, 4)
    assert Augment.from_dict(aug.to_dict()) == aug and not Augment() and aug
    x = torch.rand(3, 1, 4, 4)
    assert torch.equal(Augment()(x, None), x)
    with pytest.raises(DataError):
        Augment(hflip=True)(torch.rand(3, 4), None)
    with pytest.raises(DataError):
        Augment(crop_padding=-1)


def test_split_checks_lengths():
    with pytest.raises(DataError):
        Split(torch.zeros(3, 2), torch.zeros(4))
    s = Split(torch.zeros(4, 2).t(), torch.zeros(2))
    assert s.x.is_contiguous() and len(s) == 2


def test_csv_empty_cells_are_an_error_unless_filled(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("a,b,y\n" + "".join(f"{'' if i == 7 else i},{'NA' if i == 9 else 'xyz'[i % 3]},{i % 2}\n"
                                         for i in range(40)))
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{path}")
    msg = one_line(e)
    assert f"{path} line 9, column 'a'" in msg and "Received: ''" in msg and f"csv:{path}?fill=mean" in msg
    ds = load_dataset(f"csv:{path}?fill=mean")
    all_x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    # the numeric gap is the train mean (0 after standardising); the categorical one no category
    assert torch.isfinite(all_x).all() and int((all_x[:, 0] == 0).sum()) == 1
    assert ds.info.input_shape == (4,) and int((all_x[:, 1:].sum(1) == 0).sum()) == 1
    assert any(n.startswith("filled: 2 empty cells") for n in ds.info.notes)
    with pytest.raises(DataError, match=r"option fill must be one of none, mean .*Received: 'median'"):
        load_dataset(f"csv:{path}?fill=median")


def test_csv_mixed_column_is_an_error_naming_column_row_and_value(tmp_path):
    path = write_csv(tmp_path / "p.csv", extra_rows=[["abc", "5", "red", "50", "2", "cat"]])
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{path}")
    msg = one_line(e)
    assert f"{path} line 62, column 'height'" in msg and "Received: 'abc'" in msg
    assert "expected a number, as 60 of the column's 61 cells are" in msg
    assert f"--data 'csv:{path}?categorical=height'" in msg
    # declared categorical, the column is one-hot over its train values: more inputs, said so
    ds = load_dataset(f"csv:{path}?categorical=height")
    assert ds.info.input_shape[0] > 20
    assert any("categorical (one-hot): height (" in n for n in ds.info.notes)
    # a mostly-text column with one number is named the other way round
    other = write_csv(tmp_path / "q.csv", extra_rows=[["171", "5", "7", "50", "2", "cat"]])
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{other}")
    msg = one_line(e)
    assert "line 62, column 'color': expected text" in msg and "the number '7'" in msg
    assert f"csv:{other}?categorical=color" in msg
    # a typo in the declaration is caught, and a declared numeric column (a code) is one-hot
    with pytest.raises(DataError, match="categorical column 'colr' not found .* Did you mean 'color'"):
        load_dataset(f"csv:{other}?categorical=colr")
    ds = load_dataset(f"csv:{other}?categorical=color,grade")
    assert ds.info.input_shape == (3 + 4 + 3,)  # height, count, price; color (4); grade (3)


def test_csv_target_with_one_text_label_is_not_silently_classes(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("a,y\n" + "".join(f"{i},{i * 1.5}\n" for i in range(30)) + "30,oops\n")
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{path}")
    assert "line 32, column 'y'" in one_line(e) and "Received: 'oops'" in str(e.value)


def test_csv_notes_state_the_target_and_the_categorical_columns(tmp_path):
    path = write_csv(tmp_path / "pets.csv")
    info = load_dataset(f"csv:{path}").info
    assert info.notes[0] == ("target: column 'animal', 2 classes (the last column, taken because no target "
                             "was given; choose another with --target NAME)")
    assert info.notes[1] == ("features: 5 columns -> 7 inputs; numeric (standardised): height, count, price, "
                             "grade; categorical (one-hot): color (3 values)")
    explicit = load_dataset(f"csv:{path}", target="price").info
    assert explicit.notes[0] == "target: column 'price', regression"
    assert DataInfo.from_dict(info.to_dict()).notes == info.notes


@pytest.mark.parametrize("cell", ["inf", "-inf", "1e999", "Infinity"])
def test_csv_infinite_numbers_are_refused(tmp_path, cell):
    rows = [f"{i},{i % 3},{i * 0.5}" for i in range(20)]
    target, feature = tmp_path / "t.csv", tmp_path / "f.csv"
    target.write_text("a,b,y\n" + "\n".join(rows[:-1] + [f"19,1,{cell}"]) + "\n")
    feature.write_text("a,b,y\n" + "\n".join(rows[:-1] + [f"{cell},1,9.5"]) + "\n")
    with pytest.raises(DataError) as e:  # it used to become NaN and the run blamed the lr
        load_dataset(f"csv:{target}", target="y")
    assert f"{target} line 21, column 'y': expected a finite number. Received: {cell!r}" in one_line(e)
    with pytest.raises(DataError) as e:  # it used to be replaced by the train mean, unsaid
        load_dataset(f"csv:{feature}")
    assert f"{feature} line 21, column 'a': expected a finite number" in one_line(e)


@pytest.mark.parametrize(("n", "sizes"), [(5, (3, 1, 1)), (3, (1, 1, 1)), (6, (4, 1, 1)), (10, (7, 1, 2))])
def test_csv_small_tables_get_a_row_in_every_split(tmp_path, n, sizes):
    path = tmp_path / "s.csv"
    path.write_text("a,y\n" + "".join(f"{i},{i * 0.5}\n" for i in range(n)))
    ds = load_dataset(f"csv:{path}")
    assert (len(ds.train), len(ds.val), len(ds.test)) == sizes


def test_csv_too_small_to_split_is_one_line(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("a,y\n1,0.5\n2,1.5\n")
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{path}")
    msg = one_line(e)
    assert f"csv: {path}: too few rows" in msg and "3 rows are needed. Received: 2 rows" in msg
    assert len(load_dataset(f"csv:{path}", val_fraction=0.0).val) == 0  # no validation asked for: none


def test_data_modules_import_each_other_without_cycles():
    import ast
    import importlib

    import archlab.data

    folder = Path(archlab.data.__file__).parent
    graph = {}
    for file in folder.glob("_*.py"):
        tree = ast.parse(file.read_text())
        graph[file.stem] = {n.module for n in ast.walk(tree)
                            if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}
    graph = {k: {m for m in v if m in graph} for k, v in graph.items()}

    def reaches(start, goal, seen=()):
        return any(m == goal or (m not in seen and reaches(m, goal, (*seen, m))) for m in graph[start])

    assert not [m for m in graph if reaches(m, m)], graph
    assert "_ondisk" not in graph["_dataset"] and {"_dataset", "_ondisk"} <= graph["_load"]
    # no compatibility re-exports: the tokenizers are _tokenizers' names, not _text's
    assert importlib.import_module("archlab.data._text").__all__ == []


def test_split_to_device():
    s = counting_split(4).to("cpu")
    assert s.x.device.type == "cpu" and len(s) == 4


def test_data_command_says_the_csv_target_and_categorical_columns(tmp_path):
    from typer.testing import CliRunner

    from archlab.cli import app

    path = write_csv(tmp_path / "pets.csv")
    result = CliRunner().invoke(app, ["data", f"csv:{path}"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert ("target   column 'animal', 2 classes (the last column, taken because no target was given; "
            "choose another with --target NAME)") in lines
    assert any(line.startswith("features 5 columns -> 7 inputs;") and "categorical (one-hot): color (3 values)"
               in line for line in lines)
    bad = write_csv(tmp_path / "bad.csv", extra_rows=[["abc", "5", "red", "50", "2", "cat"]])
    result = CliRunner().invoke(app, ["data", f"csv:{bad}"])
    assert isinstance(result.exception, DataError) and "column 'height': expected a number" in str(result.exception)
