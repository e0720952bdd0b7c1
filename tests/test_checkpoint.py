"""Checkpoints: exact round trips, RNG restore, tied weights, and crash safety."""

from __future__ import annotations

import copy
import json
import os
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import archlab.train._checkpoint as ckpt
from archlab.core import StoreError
from archlab.train import has_checkpoint, load_checkpoint, save_checkpoint


class Net(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, width), nn.BatchNorm1d(width), nn.ReLU())
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        return self.head(self.body(x))


class TiedLM(nn.Module):
    """Embedding and output projection share one weight, as in GPT-2 / nanoGPT."""

    def __init__(self, tie: bool = True):
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.out = nn.Linear(6, 11, bias=False)
        if tie:
            self.out.weight = self.embed.weight

    def forward(self, tokens):
        return self.out(self.embed(tokens))  # (B, T, vocab)


def _trained(steps: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(steps):
        x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, opt, sched


def _fresh():
    torch.manual_seed(123)  # different init from _trained
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def _same_tensors(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same_tensors(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same_tensors(x, y)
    else:
        assert a == b


def test_round_trip_model_optimizer_scheduler_rng(tmp_path):
    model, opt, sched = _trained()
    gen = torch.Generator().manual_seed(7)
    state = {
        "epoch": 3,
        "step": 42,
        "best": {"val_acc": 0.875, "val_loss": float("inf")},
        "history": [{"epoch": 0, "loss": float("nan")}],
        "shape": (1, 8, 8),
        "by_fold": {0: "a", 1: "b"},
        "generator": gen.get_state(),
        "mask": torch.tensor([True, False]),
        "array": np.arange(3, dtype=np.float32),
    }
    random.seed(5)
    np.random.seed(5)
    save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, state=state)
    expected = (torch.rand(3), random.random(), np.random.rand())
    x = torch.randn(5, 4)
    model.eval()
    want = model(x)

    for f in ("checkpoint.safetensors", "optimizer.safetensors", "checkpoint.json"):
        assert (tmp_path / f).is_file()
    assert [p.name for p in tmp_path.glob("*.tmp")] == []

    torch.manual_seed(999)  # scramble every RNG, then restore
    random.seed(999)
    np.random.seed(999)
    model2, opt2, sched2 = _fresh()
    got = load_checkpoint(tmp_path, model=model2, optimizer=opt2, scheduler=sched2)
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]
    _same_tensors(model.state_dict(), model2.state_dict())
    _same_tensors(opt.state_dict(), opt2.state_dict())
    assert sched2.state_dict() == sched.state_dict() and sched2.get_last_lr() == sched.get_last_lr()
    model2.eval()
    assert torch.equal(model2(x), want)

    assert got["epoch"] == 3 and got["best"]["val_loss"] == float("inf")
    assert got["shape"] == (1, 8, 8) and got["by_fold"] == {0: "a", 1: "b"}
    assert got["history"][0]["loss"] != got["history"][0]["loss"]  # NaN
    assert torch.equal(got["mask"], state["mask"]) and got["mask"].dtype == torch.bool
    assert isinstance(got["array"], np.ndarray) and got["array"].tolist() == [0.0, 1.0, 2.0]
    gen2 = torch.Generator()
    gen2.set_state(got["generator"])
    assert torch.equal(torch.rand(4, generator=gen2), torch.rand(4, generator=gen))


def test_rng_restore_gives_the_same_next_draw(tmp_path):
    model, opt, _ = _trained(steps=1)
    save_checkpoint(tmp_path, model=model, optimizer=opt, state={})
    after_save = torch.rand(5)
    torch.rand(100)  # move on
    load_checkpoint(tmp_path, model=model, optimizer=opt)
    assert torch.equal(torch.rand(5), after_save)
    torch.rand(100)
    load_checkpoint(tmp_path, model=model, optimizer=opt, restore_rng=False)
    assert not torch.equal(torch.rand(5), after_save)


def test_resumed_training_matches_uninterrupted(tmp_path):
    """Save after 3 steps, load into fresh objects, take 2 more: same as 5 straight steps."""
    model, opt, sched = _trained(steps=3)
    save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, state={"step": 3})

    def more(m, o, s):
        for _ in range(2):
            loss = m(torch.randn(16, 4)).square().mean()
            o.zero_grad()
            loss.backward()
            o.step()
            s.step()
        return m

    straight = more(model, opt, sched)
    m2, o2, s2 = _fresh()
    load_checkpoint(tmp_path, model=m2, optimizer=o2, scheduler=s2)
    resumed = more(m2, o2, s2)
    _same_tensors(straight.state_dict(), resumed.state_dict())


def test_tied_weights_are_saved_once_and_stay_tied(tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, model=model, optimizer=opt, state={})
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert meta["aliases"] == {"out.weight": "embed.weight"}

    tied = TiedLM()
    load_checkpoint(tmp_path, model=tied, optimizer=torch.optim.AdamW(tied.parameters()))
    assert tied.out.weight is tied.embed.weight
    assert torch.equal(tied.embed.weight, model.embed.weight)

    untied = TiedLM(tie=False)  # built without the tie: load restores it
    load_checkpoint(tmp_path, model=untied)
    assert untied.out.weight is untied.embed.weight
    assert torch.equal(untied.out.weight, model.embed.weight)


def test_weights_sharing_memory_without_being_the_same_view(tmp_path):
    class Halves(nn.Module):
        def __init__(self):
            super().__init__()
            whole = torch.arange(8.0)
            self.register_buffer("a", whole[:4])
            self.register_buffer("b", whole[4:])

    save_checkpoint(tmp_path, model=Halves(), optimizer=None, state={}, rng=False)
    m = Halves()
    m.a.zero_()
    m.b.zero_()
    load_checkpoint(tmp_path, model=m)
    assert m.a.tolist() == [0, 1, 2, 3] and m.b.tolist() == [4, 5, 6, 7]


def test_truncated_weights_are_detected(tmp_path):
    model, opt, _ = _trained(steps=1)
    save_checkpoint(tmp_path, model=model, optimizer=opt, state={"epoch": 1})
    weights = tmp_path / "checkpoint.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="checkpoint is damaged .*checkpoint.safetensors is missing or not"):
        has_checkpoint(tmp_path)  # there is one, and it is damaged: never "no checkpoint"
    with pytest.raises(StoreError) as err:
        load_checkpoint(tmp_path, model=model)
    msg = str(err.value)
    assert str(weights) in msg and "does not match" in msg and "\n" not in msg


def test_altered_weights_same_size_are_detected(tmp_path):
    model, _, _ = _trained(steps=1)
    save_checkpoint(tmp_path, model=model, optimizer=None, state={})
    weights = tmp_path / "checkpoint.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert has_checkpoint(tmp_path)  # cheap check: sizes only
    with pytest.raises(StoreError, match="sha256"):
        load_checkpoint(tmp_path, model=model)


def test_missing_json_or_files(tmp_path):
    assert not has_checkpoint(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="no checkpoint here"):
        load_checkpoint(tmp_path / "nowhere", model=Net())
    model, opt, _ = _trained(steps=1)
    save_checkpoint(tmp_path, model=model, optimizer=opt, state={})
    assert has_checkpoint(tmp_path)
    (tmp_path / "optimizer.safetensors").unlink()
    with pytest.raises(StoreError, match="damaged"):
        has_checkpoint(tmp_path)
    with pytest.raises(StoreError, match="optimizer.safetensors: does not match.*missing"):
        load_checkpoint(tmp_path, model=model, optimizer=opt)
    (tmp_path / "checkpoint.json").unlink()
    assert not has_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(StoreError, match="the checkpoint is damaged"):
        has_checkpoint(tmp_path)
    with pytest.raises(StoreError, match="the checkpoint is damaged"):
        load_checkpoint(tmp_path, model=model)


def test_mismatched_model_lists_the_differences(tmp_path):
    model, _, _ = _trained(steps=1)
    save_checkpoint(tmp_path, model=model, optimizer=None, state={})
    wider = Net(width=16)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(StoreError) as err:
        load_checkpoint(tmp_path, model=wider)
    msg = str(err.value)
    assert "checkpoint.safetensors: weights do not fit Net" in msg
    assert "shape mismatch [body.0.weight: checkpoint (8, 4) vs model (16, 4)" in msg
    assert "(+" in msg and "more)" in msg and "\n" not in msg
    _same_tensors(before, wider.state_dict())  # nothing was changed

    with pytest.raises(StoreError, match=r"missing \[embed.weight.*unexpected \[body.0.bias, body.0.weight"):
        load_checkpoint(tmp_path, model=TiedLM())


def test_optimizer_and_scheduler_mismatch(tmp_path):
    model, opt, _ = _trained(steps=1)
    save_checkpoint(tmp_path, model=model, optimizer=opt, state={})
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(StoreError, match="optimizer state is for AdamW, received a SGD"):
        load_checkpoint(tmp_path, model=model, optimizer=sgd)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    with pytest.raises(StoreError, match="has no scheduler state"):
        load_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched)
    few = torch.optim.AdamW(list(model.parameters())[:2])
    with pytest.raises(StoreError, match="does not fit"):
        load_checkpoint(tmp_path, model=model, optimizer=few)


def test_crash_before_commit_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _trained(steps=2)
    save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, state={"epoch": 1})
    old = {k: v.clone() for k, v in model.state_dict().items()}
    model2, opt2, sched2 = _trained(steps=4, seed=1)

    real_replace = os.replace

    def crash_on_json(src, dst):
        if str(dst).endswith("checkpoint.json"):
            raise OSError("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_on_json)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(
            tmp_path, model=model2, optimizer=opt2, scheduler=sched2, state={"epoch": 2}
        )
    monkeypatch.undo()

    assert [p.name for p in tmp_path.glob("*.tmp")] == []  # temporaries cleaned up
    fresh, fopt, fsched = _fresh()
    assert load_checkpoint(tmp_path, model=fresh, optimizer=fopt, scheduler=fsched) == {"epoch": 1}
    _same_tensors(old, fresh.state_dict())


def test_crash_after_commit_loads_the_new_checkpoint(tmp_path, monkeypatch):
    model, opt, _ = _trained(steps=2)
    save_checkpoint(tmp_path, model=model, optimizer=opt, state={"epoch": 1})
    model2, opt2, _ = _trained(steps=4, seed=1)

    real_replace = os.replace

    def crash_after_json(src, dst):
        if str(dst).endswith(".safetensors"):
            raise OSError("simulated crash")  # the JSON is in, the tensor renames are not
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_after_json)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path, model=model2, optimizer=opt2, state={"epoch": 2})
    monkeypatch.undo()

    assert has_checkpoint(tmp_path)
    fresh, fopt, _ = _fresh()
    assert load_checkpoint(tmp_path, model=fresh, optimizer=fopt) == {"epoch": 2}
    _same_tensors(model2.state_dict(), fresh.state_dict())
    # the next save completes the pending renames and leaves no temporaries behind
    save_checkpoint(tmp_path, model=model2, optimizer=opt2, state={"epoch": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.json",
        "checkpoint.safetensors",
        "optimizer.safetensors",
    ]
    assert load_checkpoint(tmp_path, model=fresh, optimizer=fopt) == {"epoch": 3}


def test_state_must_be_json_able(tmp_path):
    with pytest.raises(StoreError, match=r"checkpoint state.fn: cannot save a value of type"):
        save_checkpoint(tmp_path, model=Net(), optimizer=None, state={"fn": object()})
    assert not has_checkpoint(tmp_path) and list(tmp_path.iterdir()) == []


def test_no_pickle_anywhere():
    source = Path(ckpt.__file__).read_text()
    assert "import pickle" not in source and "torch.load(" not in source


# ------------------------------------------------------------------ tampered metadata


STATE = {"epoch": 3, "step_in_epoch": 0, "history": [{"epoch": 1, "val_acc": 0.5}], "best": 0.5,
         "best_epoch": 1, "elapsed": 1.5, "partial_sums": None, "scaler": {}}


def _edit(meta: dict, how: str) -> None:
    if how == "no aliases":
        del meta["aliases"]
    elif how == "no state.epoch":
        del meta["state"]["epoch"]
    elif how == "epoch 'x'":
        meta["state"]["epoch"] = "x"
    elif how == "history 5":
        meta["state"]["history"] = 5
    elif how == "dangling $tensor":
        meta["optimizer"]["state"]["$items"][0][1]["exp_avg"] = {"$tensor": "optimizer.state.99.nowhere"}
    elif how == "$float abc":
        meta["state"]["best"] = {"$float": "abc"}
    elif how == "short python RNG":
        meta["rng"]["python"]["$tuple"][1]["$tuple"] = meta["rng"]["python"]["$tuple"][1]["$tuple"][:10]
    elif how == "short numpy RNG":
        meta["rng"]["numpy"][1] = meta["rng"]["numpy"][1][:100]
    elif how == "string lr":
        meta["optimizer"]["param_groups"][0]["lr"] = "0.01"
    elif how == "no files":
        del meta["files"]
    elif how == "file with a folder":
        meta["files"]["weights"]["file"] = "../../elsewhere.safetensors"
    elif how == "state a list":
        meta["state"] = [1, 2]
    else:
        raise AssertionError(how)


TAMPERING = ["no aliases", "no state.epoch", "epoch 'x'", "history 5", "dangling $tensor", "$float abc",
             "short python RNG", "short numpy RNG", "string lr", "no files", "file with a folder", "state a list"]


@pytest.mark.parametrize("how", TAMPERING)
def test_tampered_metadata_is_one_line_saying_damaged_and_changes_nothing(tmp_path, how):
    model, opt, sched = _trained(steps=2)
    save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, state=STATE)
    path = tmp_path / "checkpoint.json"
    meta = json.loads(path.read_text())
    _edit(meta, how)
    path.write_text(json.dumps(meta))
    fresh, fresh_opt, fresh_sched = _fresh()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    opt_before = fresh_opt.state_dict()["param_groups"][0]["lr"]
    rng_before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    with pytest.raises(StoreError) as err:
        has_checkpoint(tmp_path)
        load_checkpoint(tmp_path, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched,
                        state_like={"epoch": 0, "history": [], "best": None, "scaler": {}})
    msg = str(err.value)
    assert msg.startswith(f"{path}: the checkpoint is damaged (") and "\n" not in msg, msg
    assert "train the run again from scratch, or restore them from a backup" in msg
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())
    assert fresh_opt.state_dict()["param_groups"][0]["lr"] == opt_before and not fresh_opt.state_dict()["state"]
    assert torch.equal(torch.get_rng_state(), rng_before[0]) and random.getstate() == rng_before[1]
    assert np.array_equal(np.random.get_state()[1], rng_before[2])


@pytest.mark.parametrize("how, match", [
    ("truncated", "the checkpoint is damaged"),
    ("version 99", "written by a newer archlab, or damaged \\(checkpoint version 99; this archlab reads up to 1\\)"),
    ("a list", "the checkpoint is damaged \\(not an archlab-checkpoint file\\)"),
    ("a link", "is a symbolic link"),
])
def test_an_unreadable_checkpoint_is_never_no_checkpoint(tmp_path, how, match):
    model, opt, _ = _trained(steps=1)
    save_checkpoint(tmp_path, model=model, optimizer=opt, state=STATE)
    path = tmp_path / "checkpoint.json"
    text = path.read_text()
    if how == "truncated":
        path.write_text(text[: len(text) // 2])
    elif how == "version 99":
        path.write_text(json.dumps({**json.loads(text), "version": 99}))
    elif how == "a list":
        path.write_text("[]")
    else:
        (tmp_path / "real.json").write_text(text)
        path.unlink()
        path.symlink_to(tmp_path / "real.json")
    for call in (lambda: has_checkpoint(tmp_path), lambda: load_checkpoint(tmp_path, model=model)):
        with pytest.raises(StoreError, match=match) as err:
            call()
        assert "\n" not in str(err.value) and "no checkpoint" not in str(err.value)


def test_tensor_files_must_be_regular_files(tmp_path):
    """A tensor file replaced by a FIFO or a link is not found (never read or hashed)."""
    model, _, _ = _trained(steps=1)
    save_checkpoint(tmp_path, model=model, optimizer=None, state={})
    weights = tmp_path / "checkpoint.safetensors"
    weights.rename(tmp_path / "moved.safetensors")
    os.mkfifo(weights)
    with pytest.raises(StoreError, match="damaged .*checkpoint.safetensors is missing or not"):
        has_checkpoint(tmp_path)
    weights.unlink()
    weights.symlink_to(tmp_path / "moved.safetensors")
    with pytest.raises(StoreError, match="does not match"):
        load_checkpoint(tmp_path, model=model)


def test_state_like_accepts_what_the_trainer_saves(tmp_path):
    model, opt, sched = _trained(steps=1)
    state = {**STATE, "partial_sums": torch.ones(3), "best": float("nan")}
    save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, state=state)
    like = {**STATE, "best": None, "partial_sums": None, "extra_only_in_saved": None}
    like.pop("extra_only_in_saved")
    loaded = load_checkpoint(tmp_path, model=_fresh()[0], state_like=like)
    assert loaded["epoch"] == 3 and torch.equal(loaded["partial_sums"], torch.ones(3))


# --------------------------------------------------------------- background writes


def _gated_writes(monkeypatch):
    """Hold every background write until the returned event is set; record its thread."""
    gate, threads = threading.Event(), []
    real_write = ckpt._write

    def write(directory, snap):
        threads.append(threading.current_thread())
        assert gate.wait(30)
        real_write(directory, snap)

    monkeypatch.setattr(ckpt, "_write", write)
    return gate, threads


def test_background_writer_saves_the_state_at_the_call(tmp_path, monkeypatch):
    model, opt, sched = _trained(steps=3)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())
    torch.manual_seed(7)
    draw = torch.rand(3)
    torch.manual_seed(7)
    gate, threads = _gated_writes(monkeypatch)
    writer = ckpt.CheckpointWriter(tmp_path)
    history = [{"epoch": 1, "val_acc": 0.5}]
    writer.save(model=model, optimizer=opt, scheduler=sched, state={"history": history})
    assert writer.writing and not has_checkpoint(tmp_path)  # the write is on another thread
    # Training goes on while the write is held: weights, optimizer state, RNG and state change.
    for _ in range(2):
        loss = model(torch.randn(16, 4)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    history.append({"epoch": 2, "val_acc": 0.6})
    gate.set()
    writer.wait()
    assert not writer.writing and threads[0] is not threading.main_thread()
    writer.close()
    assert not threads[0].is_alive()  # close ends the worker thread
    fresh, fopt, fsched = _fresh()
    state = load_checkpoint(tmp_path, model=fresh, optimizer=fopt, scheduler=fsched)
    assert state == {"history": [{"epoch": 1, "val_acc": 0.5}]}
    _same_tensors(saved, fresh.state_dict())
    _same_tensors(saved_opt["state"], fopt.state_dict()["state"])
    assert torch.equal(torch.rand(3), draw)  # the RNG state of the call


def test_background_writer_joins_the_write_in_flight_before_the_next(tmp_path, monkeypatch):
    model, opt, _ = _trained(steps=1)
    gate, threads = _gated_writes(monkeypatch)
    writer = ckpt.CheckpointWriter(tmp_path)
    writer.save(model=model, optimizer=opt, state={"epoch": 1})
    threading.Timer(0.2, gate.set).start()
    writer.save(model=model, optimizer=opt, state={"epoch": 2})  # waits for epoch 1's write
    assert load_checkpoint(tmp_path, model=Net(), optimizer=None, restore_rng=False) == {"epoch": 1}
    writer.close()
    assert load_checkpoint(tmp_path, model=Net(), optimizer=None, restore_rng=False) == {"epoch": 2}
    assert len(threads) == 2 and [p.name for p in tmp_path.glob("*.tmp")] == []
    writer.save(model=model, optimizer=opt, state={"epoch": 3})  # after close: a new worker
    writer.close()
    assert load_checkpoint(tmp_path, model=Net(), optimizer=None, restore_rng=False) == {"epoch": 3}
    assert threads[2] is not threads[0] and not threads[2].is_alive()


def test_background_write_errors_surface_on_wait_and_keep_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, _ = _trained(steps=1)
    writer = ckpt.CheckpointWriter(tmp_path)
    writer.save(model=model, optimizer=opt, state={"epoch": 1})
    writer.wait()
    real_replace = os.replace

    def crash_on_json(src, dst):
        if str(dst).endswith("checkpoint.json"):
            raise OSError("disk full (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_on_json)
    writer.save(model=model, optimizer=opt, state={"epoch": 2})
    with pytest.raises(OSError, match="disk full"):
        writer.wait()
    writer.wait()  # reported once
    monkeypatch.undo()
    assert load_checkpoint(tmp_path, model=Net(), optimizer=None, restore_rng=False) == {"epoch": 1}
    # Clean-up while another error is on its way drops the write's error.
    gate, _ = _gated_writes(monkeypatch)
    writer.save(model=model, optimizer=opt, state={"epoch": 3})
    monkeypatch.setattr(ckpt.os, "replace", crash_on_json)
    gate.set()
    writer.close(reraise=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path, model=Net(), optimizer=None, restore_rng=False) == {"epoch": 1}


def test_synchronous_writer_writes_inside_save(tmp_path):
    writer = ckpt.CheckpointWriter(tmp_path, background=False)
    writer.save(model=Net(), optimizer=None, state={"epoch": 4})
    assert not writer.writing
    assert load_checkpoint(tmp_path, model=Net(), restore_rng=False) == {"epoch": 4}


def test_checkpoint_json_is_compact_and_rng_states_stay_plain_lists(tmp_path):
    save_checkpoint(tmp_path, model=Net(), optimizer=None, state={"seq": (1, 2, True)})
    text = (tmp_path / "checkpoint.json").read_text()
    assert "\n" not in text
    meta = json.loads(text)
    assert meta["state"]["seq"] == {"$tuple": [1, 2, True]}
    version, keys, gauss = meta["rng"]["python"]["$tuple"]
    assert isinstance(keys, dict) and len(keys["$tuple"]) == 625 and all(isinstance(k, int) for k in keys["$tuple"])
