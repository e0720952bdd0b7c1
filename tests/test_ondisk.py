"""npy:FOLDER data and the streaming path for data larger than memory (archlab.ondisk)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from archlab import DataError
from archlab.compare import compare
from archlab.data import DiskSplit, Split, load_dataset, memory_budget, parse_size, serve, write_npy
from archlab.runs import open_store
from archlab.train import fit

REPO = Path(__file__).resolve().parents[1]
MLP = {"name": "mlp", "model": ["flatten", {"linear": 32}, "relu", {"dropout": 0.2}, {"linear": "$num_classes"}]}
CNN = {"name": "cnn", "model": [{"conv2d": {"out": 4, "kernel": 3, "padding": 1}}, "relu", "flatten",
                                {"linear": "$num_classes"}]}


@pytest.fixture(scope="module")
def digits_npy(tmp_path_factory) -> Path:
    return write_npy(tmp_path_factory.mktemp("digits-npy"), load_dataset("digits"))


@pytest.fixture(scope="module")
def bytes_npy(tmp_path_factory) -> Path:
    """uint8 images with no val/test files and no info.json: everything is inferred."""
    folder = tmp_path_factory.mktemp("bytes-npy")
    rng = np.random.default_rng(0)
    y = np.arange(600) % 3
    x = (rng.integers(0, 60, (600, 1, 6, 6)) + 90 * y[:, None, None, None]).astype(np.uint8)
    np.save(folder / "train_x.npy", x)
    np.save(folder / "train_y.npy", y.astype(np.int16))
    return folder


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------ loading


def test_written_digits_load_back_identically(digits_npy):
    original, loaded = load_dataset("digits"), load_dataset(f"npy:{digits_npy}")
    assert loaded.info.input_shape == (1, 8, 8) and loaded.info.task == "classify"
    assert loaded.info.num_classes == 10 and loaded.info.class_names == original.info.class_names
    for part in ("train", "val", "test"):
        mine, theirs = getattr(loaded, part), getattr(original, part)
        assert isinstance(mine, Split)  # small: read into memory
        assert torch.equal(mine.x, theirs.x) and torch.equal(mine.y, theirs.y)


def test_bytes_become_images_and_missing_splits_are_carved_from_train(bytes_npy):
    ds = load_dataset(f"npy:{bytes_npy}")
    assert ds.info.input_dtype == "float" and ds.info.num_classes == 3 and ds.info.task == "classify"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (420, 60, 120)  # 20% test, 10% val
    assert torch.bincount(ds.test.y).tolist() == [40, 40, 40]  # stratified
    raw = np.load(bytes_npy / "train_x.npy")
    assert ds.train.x.dtype == torch.float32 and float(ds.train.x.max()) <= 1.0
    assert set(torch.unique(torch.round(ds.train.x * 255)).long().tolist()) <= set(np.unique(raw).tolist())
    again = load_dataset(f"npy:{bytes_npy}", seed=5)  # fixed positions: the run seed does not move them
    assert torch.equal(again.test.x, ds.test.x)


def test_streamed_rows_equal_the_in_memory_rows(bytes_npy):
    memory = load_dataset(f"npy:{bytes_npy}", stream=False)
    disk = load_dataset(f"npy:{bytes_npy}", stream=True)
    assert isinstance(disk.train, DiskSplit) and len(disk.train) == len(memory.train)
    idx = torch.tensor([17, 3, 400, 3, 0])  # any order, repeats allowed
    for got, want in zip(disk.train.take(idx), memory.train.take(idx), strict=True):
        assert torch.equal(got, want)
    for got, want in zip(disk.val.slice(10, 25), memory.val.slice(10, 25), strict=True):
        assert torch.equal(got, want)
    assert torch.equal(disk.test.targets(), memory.test.y)
    assert torch.equal(disk.train.materialize().x, memory.train.x)
    # A DataLoader worker started by spawn gets the file paths, not a copy of the data.
    blob = pickle.dumps(disk.train)
    assert len(blob) < 20_000
    assert torch.equal(pickle.loads(blob).take(idx)[0], memory.train.take(idx)[0])


def test_token_arrays_become_a_language_model_set(tmp_path):
    x = np.random.default_rng(0).integers(0, 50, (40, 16)).astype(np.int32)
    for part in ("train", "test"):
        np.save(tmp_path / f"{part}_x.npy", x)
        np.save(tmp_path / f"{part}_y.npy", np.roll(x, -1, axis=1))
    ds = load_dataset(f"npy:{tmp_path}", stream=True)
    assert ds.info.task == "language_model" and ds.info.input_dtype == "long"
    assert ds.info.vocab_size == int(x.max()) + 1
    assert ds.train.take(torch.tensor([0]))[0].dtype == torch.int64


def test_a_byte_corpus_is_tokens_and_bool_labels_are_classes(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (30, 16)).astype(np.uint8)
    np.save(tmp_path / "train_x.npy", x)
    np.save(tmp_path / "train_y.npy", np.roll(x, -1, axis=1))  # uint8 (N, T) targets too
    ds = load_dataset(f"npy:{tmp_path}")
    assert ds.info.task == "language_model" and ds.info.input_dtype == "long" and ds.train.x.dtype == torch.int64
    np.save(tmp_path / "train_x.npy", np.zeros((30, 3), np.float32))
    np.save(tmp_path / "train_y.npy", np.arange(30) % 2 == 0)
    ds = load_dataset(f"npy:{tmp_path}")
    assert ds.info.task == "classify" and ds.info.num_classes == 2 and ds.train.y.dtype == torch.int64


def test_uint8_export_refuses_features(tmp_path):
    features = tmp_path / "feat"
    features.mkdir()
    np.save(features / "train_x.npy", np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
    np.save(features / "train_y.npy", np.arange(50) % 2)
    with pytest.raises(DataError, match=r"--uint8 stores images with values in \[0, 1\].*export without --uint8"):
        write_npy(tmp_path / "out", load_dataset(f"npy:{features}"), images_as_uint8=True)
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.parametrize(("files", "message"), [
    ({}, "train_x.npy not found"),
    ({"train_x.npy": np.zeros((4, 2))}, "has no partner train_y.npy"),
    ({"train_x.npy": np.zeros((4, 2)), "train_y.npy": np.zeros(5, int)}, "with the same N"),
    ({"train_x.npy": np.zeros((4, 2)), "train_y.npy": np.zeros(4, int), "info.json": '{"classes": 3}'},
     "unknown key"),
    ({"train_x.npy": np.zeros((4, 2)), "train_y.npy": np.zeros(4, int), "info.json": "{nope"}, "not valid JSON"),
    ({"train_x.npy": np.zeros((4, 2)), "train_y.npy": np.array([0, 1, 2, 5]), "info.json": '{"num_classes": 3}'},
     "class id 5 is out of range"),
    ({"train_x.npy": np.zeros((4, 2)), "train_y.npy": np.array([0, -1, 1, 1])}, "class ids must be >= 0"),
    ({"train_x.npy": np.zeros((10, 2)), "train_y.npy": np.zeros(10, int), "test_x.npy": np.zeros((3, 5)),
      "test_y.npy": np.zeros(3, int)}, "differ in shape"),
    ({"train_x.npy": np.zeros((4, 2)), "train_y.npy": np.zeros(4, int), "info.json": '{"input": "image"}'},
     "uint8 pixels"),
    ({"train_x.npy": np.zeros((4, 2)), "train_y.npy": np.zeros(4, int), "info.json": '{"num_classes": "two"}'},
     "num_classes must be an integer >= 2. Received: 'two'"),
    ({"train_x.npy": np.zeros((4, 2)), "train_y.npy": np.zeros(4, int), "info.json": '{"num_classes": 10.7}'},
     "num_classes must be an integer"),
    ({"train_x.npy": np.zeros((4, 2)), "train_y.npy": np.zeros(4, int), "info.json": '{"class_names": "ab"}'},
     "class_names must be a list"),
    ({"train_x.npy": np.zeros((4, 2)), "train_y.npy": np.zeros(4), "info.json": '{"task": "classify"}'},
     "task classify needs integer ids in y; train_y.npy is float64"),
    ({"train_x.npy": np.zeros(600), "train_y.npy": np.zeros(600, int)}, r"x needs a sample axis .*reshape\(-1, 1\)"),
    ({"train_x.npy": np.zeros((10, 2)), "train_y.npy": np.zeros(10, int), "val_x.npy": np.zeros((0, 2)),
      "val_y.npy": np.zeros(0, int)}, "val_x.npy has no rows; remove val_x.npy and val_y.npy"),
    ({"train_x.npy": np.array([[0.0, 1.0], [np.nan, 2.0]]), "train_y.npy": np.zeros(2, int)},
     "train_x.npy row 1 holds NaN or inf"),
])
def test_bad_folders_name_the_file_and_the_fix(tmp_path, files, message):
    for name, content in files.items():
        if isinstance(content, str):
            (tmp_path / name).write_text(content)
        else:
            np.save(tmp_path / name, content)
    with pytest.raises(DataError, match=message):
        load_dataset(f"npy:{tmp_path}")


@pytest.mark.parametrize(("files", "message"), [
    # one bad label used to make range(10**9 + 1) class names: a MemoryError traceback
    ({"train_y.npy": np.where(np.arange(300) == 137, 10**9, np.arange(300) % 10)},
     r"train_y.npy row 137: expected a class id in 0..299 \(no more classes than the 300 labelled rows\). "
     r"Received: 1,000,000,000, which would make 1,000,000,001 classes. Fix that label, or state num_classes"),
    ({"train_y.npy": np.arange(300) % 10, "val_x.npy": np.zeros((20, 2)),
      "val_y.npy": np.where(np.arange(20) == 3, 7_000_000, 1)}, r"val_y.npy row 3: expected a class id in 0..319"),
    ({"train_y.npy": np.arange(300) % 10, "info.json": '{"num_classes": 1000000000}'},
     r"info.json: num_classes must be at most 100,000. Received: 1,000,000,000"),
    ({"train_y.npy": np.where(np.arange(300) == 42, 12, np.arange(300) % 10), "info.json": '{"num_classes": 10}'},
     r"train_y.npy row 42: class id 12 is out of range for num_classes 10 \(info.json\): ids must be in 0..9"),
    ({"train_y.npy": np.where(np.arange(300) == 8, -3, np.arange(300) % 10)},
     r"train_y.npy row 8: class ids must be >= 0. Received: -3"),
])
def test_a_bad_label_names_its_file_and_row(tmp_path, files, message):
    np.save(tmp_path / "train_x.npy", np.zeros((300, 2), np.float32))
    for name, content in files.items():
        if isinstance(content, str):
            (tmp_path / name).write_text(content)
        else:
            np.save(tmp_path / name, content)
    with pytest.raises(DataError, match=message) as e:
        load_dataset(f"npy:{tmp_path}")
    assert "\n" not in str(e.value)


def test_a_stated_class_count_may_exceed_the_rows(tmp_path):
    np.save(tmp_path / "train_x.npy", np.zeros((30, 2), np.float32))
    np.save(tmp_path / "train_y.npy", np.arange(30) * 3)  # ids up to 87 in 30 rows
    with pytest.raises(DataError, match="no more classes than the 30 labelled rows"):
        load_dataset(f"npy:{tmp_path}")
    (tmp_path / "info.json").write_text('{"num_classes": 90}')
    assert load_dataset(f"npy:{tmp_path}").info.num_classes == 90


def test_truncated_and_pickled_arrays_are_refused(tmp_path):
    np.save(tmp_path / "train_x.npy", np.zeros((100, 8), np.float32))
    np.save(tmp_path / "train_y.npy", np.zeros(100, np.int64))
    path = tmp_path / "train_x.npy"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"train_x.npy is not a readable .npy array"):
        load_dataset(f"npy:{tmp_path}")
    np.save(path, np.array([{"a": 1}] * 100, dtype=object))
    with pytest.raises(DataError, match="numeric dtypes only"):
        load_dataset(f"npy:{tmp_path}")
    with pytest.raises(DataError, match="folder not found"):
        load_dataset(f"npy:{tmp_path / 'nowhere'}")


# ------------------------------------------------------------------------ the decision


def test_the_memory_budget_decides_the_path(digits_npy, monkeypatch):
    assert parse_size("512Mi") == 512 << 20 and parse_size("1.5g") == int(1.5 * 10**9)  # core's size grammar
    assert parse_size("1000") == 1000 and parse_size("2 GiB") == 2 << 30
    monkeypatch.setenv("ARCHLAB_MEMORY_LIMIT", "lots")
    with pytest.raises(DataError, match="ARCHLAB_MEMORY_LIMIT"):
        memory_budget()
    monkeypatch.setenv("ARCHLAB_MEMORY_LIMIT", "100K")  # digits decodes to ~0.5 MB
    assert memory_budget() == 100_000
    ds = load_dataset(f"npy:{digits_npy}")
    assert all(isinstance(s, DiskSplit) for s in (ds.train, ds.val, ds.test))
    assert isinstance(load_dataset(f"npy:{digits_npy}", stream=False).train, Split)  # forced
    assert isinstance(serve(load_dataset("digits"), stream=True).train, DiskSplit)  # in-memory data, streamed
    monkeypatch.setenv("ARCHLAB_MEMORY_LIMIT", "1G")
    assert isinstance(load_dataset(f"npy:{digits_npy}").train, Split)


def test_cross_validation_refuses_streamed_data_clearly(digits_npy, monkeypatch, archlab_home):
    monkeypatch.setenv("ARCHLAB_MEMORY_LIMIT", "100K")
    with pytest.raises(DataError, match=r"cross-validation pools the train and validation data in memory "
                                        r"\(\d+ KiB decoded\)"):
        compare([MLP], data=f"npy:{digits_npy}", cv=2, epochs=1, quiet=True, jobs=1)


def test_compare_records_where_relative_data_lives(digits_npy, monkeypatch, archlab_home):
    import archlab.compare._folds as compare_module

    monkeypatch.setattr(compare_module, "_DATA_CACHE", {})  # the test above cached it streamed
    monkeypatch.chdir(digits_npy.parent)
    compare([MLP], data=f"npy:{digits_npy.name}", cv=2, epochs=1, quiet=True, jobs=1)
    runs = open_store().list_runs()
    assert runs and {r.data for r in runs} == {f"npy:{digits_npy}"}  # evaluable from any folder


# ------------------------------------------------------------------------ training


@pytest.mark.parametrize("workers", [0, 1])
def test_streaming_trains_bit_identically_to_in_memory(digits_npy, archlab_home, workers):
    settings = dict(epochs=2, batch_size=32, seed=4, quiet=True)
    memory = fit(MLP, data=f"npy:{digits_npy}", **settings)
    streamed = fit(MLP, data=f"npy:{digits_npy}", stream=True, workers=workers, **settings)
    assert _same_weights(memory.model.state_dict(), streamed.model.state_dict())  # dropout included
    assert memory.history[-1]["val_loss"] == streamed.history[-1]["val_loss"]
    assert memory.test_metrics == streamed.test_metrics and memory.test_report == streamed.test_report
    record = open_store().get_run(streamed.run_id)
    assert record.settings["stream"] is True and record.settings["workers"] == workers


def test_streamed_uint8_images_with_augmentation_match_in_memory(bytes_npy, archlab_home):
    settings = dict(epochs=2, batch_size=16, lr=0.01, seed=1, crop_padding=1, hflip=True, quiet=True)
    memory = fit(CNN, data=f"npy:{bytes_npy}", **settings)
    streamed = fit(CNN, data=f"npy:{bytes_npy}", stream=True, workers=1, **settings)
    assert _same_weights(memory.model.state_dict(), streamed.model.state_dict())
    assert streamed.test_metrics["acc"] > 0.9  # the classes are separable by brightness


def test_a_streamed_vae_trains_and_evaluates(digits_npy, archlab_home):
    vae = {"name": "vae", "vars": {"latent": 2}, "encoder": ["flatten", {"linear": "${2 * latent}"}],
           "decoder": [{"linear": 64}, "sigmoid", {"reshape": [1, 8, 8]}], "train": {"task": "vae"}}
    memory = fit(vae, data=f"npy:{digits_npy}", epochs=1, quiet=True)
    streamed = fit(vae, data=f"npy:{digits_npy}", epochs=1, stream=True, workers=0, quiet=True)
    assert memory.test_metrics == pytest.approx(streamed.test_metrics, rel=1e-6)


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "ARCHLAB_HOME": str(home), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _only_run(home: Path) -> tuple:
    store = open_store(home)
    [record] = store.list_runs()
    return record, store.run_dir(record.run_id)


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_while_streaming_then_resume(digits_npy, tmp_path):
    """A terminal's Ctrl-C reaches the reader processes too: the run still stops cleanly (exit
    130, a mid-epoch checkpoint) and resumes to the weights of an uninterrupted in-memory run."""
    args = ["zoo:mlp", "--data", f"npy:{digits_npy}", "--epochs", "4", "--batch-size", "8", "--seed", "2", "--quiet"]
    homes = {"reference": tmp_path / "reference", "stopped": tmp_path / "stopped"}
    for home in homes.values():
        home.mkdir()
    cmd = [sys.executable, "-m", "archlab", "train", *args]
    reference = subprocess.Popen([*cmd, "--no-stream"], env=_env(homes["reference"]), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    stopped = subprocess.Popen([*cmd, "--stream", "--workers", "1"], env=_env(homes["stopped"]),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and stopped.poll() is None:
            checkpoint = next((homes["stopped"] / "runs").glob("*/checkpoint.json"), None)
            if checkpoint is not None:
                try:
                    if json.loads(checkpoint.read_text())["state"]["epoch"] >= 1:
                        break
                except (OSError, ValueError, KeyError):
                    pass
            time.sleep(0.01)
        os.killpg(stopped.pid, signal.SIGINT)  # the whole group: trainer and reader process
        _, err = stopped.communicate(timeout=120)
        assert stopped.returncode == 130, err
        assert "Traceback" not in err and "resume" in err
        record, folder = _only_run(homes["stopped"])
        assert record.status == "interrupted"
        out, err = reference.communicate(timeout=300)
        assert reference.returncode == 0, err
    finally:
        for p in (reference, stopped):
            if p.poll() is None:
                p.kill()
                p.wait()
    # How data is read may change on resume: finish it in memory, with the same result.
    resumed = subprocess.run([sys.executable, "-m", "archlab", "train", "--resume", record.run_id, "--no-stream",
                              "--workers", "0", "--quiet"],
                             env=_env(homes["stopped"]), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    (ref, ref_dir), (mine, my_dir) = _only_run(homes["reference"]), _only_run(homes["stopped"])
    assert mine.status == "finished" and dict(mine.test_metrics) == dict(ref.test_metrics)
    for name in ("checkpoint.safetensors", "best.safetensors"):
        assert _same_weights(load_file(ref_dir / name), load_file(my_dir / name))


def test_data_command_describes_and_exports(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from archlab.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["data", "digits", "--export", str(tmp_path / "d"), "--uint8"])
    assert result.exit_code == 0, result.output
    assert "digits: classify, 10 classes" in result.output and "train 1,258  val 180  test 359" in result.output
    assert "held in memory" in result.output and f"--data npy:{tmp_path / 'd'}" in result.output
    assert np.load(tmp_path / "d" / "train_x.npy").dtype == np.uint8
    monkeypatch.setenv("ARCHLAB_MEMORY_LIMIT", "10Ki")
    result = runner.invoke(app, ["data", f"npy:{tmp_path / 'd'}"])
    assert result.exit_code == 0, result.output
    assert "streams from disk (more than the in-memory budget of 10 KiB)" in result.output
    exported = load_dataset(f"npy:{tmp_path / 'd'}", stream=False)
    assert torch.equal(exported.test.y, load_dataset("digits").test.y)


def test_data_command_notes_classes_without_samples(tmp_path):
    from typer.testing import CliRunner

    from archlab.cli import app

    np.save(tmp_path / "train_x.npy", np.zeros((40, 3), np.float32))
    np.save(tmp_path / "train_y.npy", 1 + np.arange(40) % 2)  # labels 1 and 2
    result = CliRunner().invoke(app, ["data", f"npy:{tmp_path}"])
    assert result.exit_code == 0, result.output
    assert "3 classes" in result.output and "class 0 has no training samples" in result.output


def test_search_with_folds_refuses_streamed_data_before_any_trial(digits_npy, monkeypatch, archlab_home):
    import archlab.compare._folds as trial_module
    from archlab.search import search

    monkeypatch.setattr(trial_module, "_DATA_CACHE", {})  # loaded afresh, under the limit below
    monkeypatch.setenv("ARCHLAB_MEMORY_LIMIT", "100K")
    spec = {**MLP, "vars": {"width": {"int": [8, 16]}},
            "model": ["flatten", {"linear": "$width"}, "relu", {"linear": "$num_classes"}]}
    with pytest.raises(DataError, match="cross-validation pools"):
        search(spec, data=f"npy:{digits_npy}", trials=2, cv=2, epochs=1, quiet=True)
    assert open_store().list_runs() == []
