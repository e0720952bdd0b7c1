"""archlab.compress quantization: int8 (dynamic, static), fp16, bf16, auto; save and load
without unpickling, bit-identical."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_model

from archlab import build
from archlab.compress import (
    QUANTIZED_META,
    QUANTIZED_WEIGHTS,
    QuantizationWarning,
    QuantizedNetwork,
    load_quantized,
    load_run_quantized,
    quantize,
    save_quantized,
)
from archlab.core import ArchlabError
from archlab.data import Split

DENSE = {"name": "dense", "input": {"shape": [1, 8, 8]},
         "model": ["flatten", {"linear": 128}, "relu", {"linear": 64}, "relu", {"linear": 10}]}
CONV = {"name": "conv", "input": {"shape": [1, 8, 8]},
        "model": [{"conv2d": {"out": 16, "kernel": 3, "padding": "same"}}, "batchnorm", "relu",
                  {"residual": [{"conv2d": {"out": 16, "kernel": 3, "padding": "same"}}, "relu"]},
                  {"maxpool": 2}, {"conv2d": {"out": 32, "kernel": 3}}, "relu", "global_avgpool",
                  {"linear": 10}]}
LSTM = {"name": "lstm", "input": {"shape": [12], "dtype": "long"},
        "model": [{"embedding": {"vocab": 50, "dim": 16}},
                  {"lstm": {"hidden": 32, "bidirectional": True, "returns": "last"}}, {"linear": 4}]}


def _net(spec):
    torch.manual_seed(0)
    net = build(spec, seed=0).eval()
    if spec is CONV:  # batch-norm statistics that are not the identity
        with torch.no_grad():
            net.train()
            net(torch.randn(64, 1, 8, 8))
            net.eval()
    return net


def _calibration(net, n=4):
    g = torch.Generator().manual_seed(1)
    if net.input_type.dtype == "long":
        return [torch.randint(0, 50, (32, 12), generator=g) for _ in range(n)]
    return [torch.randn(32, *net.input_shape, generator=g) for _ in range(n)]


def _sizes(net, q, tmp_path):
    save_model(net, str(tmp_path / "fp32.safetensors"))
    path = save_quantized(q, tmp_path / "q")
    return (tmp_path / "fp32.safetensors").stat().st_size, path.stat().st_size


def _close(a, b, tol):
    scale = a.abs().max().item()
    assert (a - b).abs().max().item() <= tol * max(scale, 1e-3)


@pytest.mark.parametrize("spec, mode, tol, min_ratio", [
    (DENSE, "int8-dynamic", 0.05, 3.5),
    (CONV, "int8-static", 0.1, 2.5),
    (LSTM, "int8-dynamic", 0.05, 1.4),   # the float embedding stays: the LSTM and head shrink
])
def test_int8_is_close_to_fp32_smaller_and_reloads_bit_identical(spec, mode, tol, min_ratio, tmp_path):
    net = _net(spec)
    cal = _calibration(net)
    q = quantize(net, "int8", calibration=cal, speed_check=False)
    assert isinstance(q, QuantizedNetwork) and q.mode == mode and q.engine == "x86"
    x = cal[0]
    with torch.inference_mode():
        ref, out = net(x), q(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    _close(ref, out, tol)
    fp32_bytes, q_bytes = _sizes(net, q, tmp_path)
    assert fp32_bytes / q_bytes >= min_ratio
    loaded = load_quantized(tmp_path / "q")
    assert loaded.mode == mode and loaded.spec == net.spec
    with torch.inference_mode():
        assert torch.equal(loaded(x), out)
    # the net itself is untouched (its mode too)
    net.train()
    quantize(net, "int8", calibration=cal, speed_check=False)
    assert net.training
    assert all(not p.is_quantized and p.dtype == torch.float32 for p in net.parameters())


def test_static_int8_runs_convolutions_in_int8(tmp_path):
    net = _net(CONV)
    q = quantize(net, "int8-static", calibration=_calibration(net), speed_check=False)
    kinds = {type(m).__module__ for m in q.modules()}
    assert any(k.startswith("torch.ao.nn.intrinsic.quantized") or k.startswith("torch.ao.nn.quantized")
               for k in kinds)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in q.modules())  # every conv is quantized


def test_saved_files_are_safetensors_and_json_with_int8_weights(tmp_path):
    net = _net(DENSE)
    q = quantize(net, "int8-dynamic", speed_check=False)
    path = save_quantized(q, tmp_path)
    assert path.name == QUANTIZED_WEIGHTS
    meta = json.loads((tmp_path / QUANTIZED_META).read_text())
    assert meta["mode"] == "int8-dynamic" and meta["engine"] == "x86" and meta["spec"]["name"] == "dense"
    with safe_open(str(path), "pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118
    weights = dict(_qtensors(meta["layout"]))  # (weight, bias) pairs hold the int8 weights
    assert len(weights) == 3 and all(dtypes[k] == torch.int8 for k in weights)
    assert all(e["scheme"] == "per_tensor" and isinstance(e["scale"], float) for e in weights.values())


def _qtensors(layout, prefix=None):
    for key, entry in layout.items():
        name = key if prefix is None else f"{prefix}.{key}"
        if entry["kind"] == "qtensor":
            yield name, entry
        elif entry["kind"] == "tuple":
            yield from _qtensors({str(i): e for i, e in enumerate(entry["items"])}, name)


@pytest.mark.parametrize("mode, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_modes_cast_weights_and_return_float32(mode, dtype, tmp_path):
    net = _net(CONV)
    q = quantize(net, mode, speed_check=False)
    assert q.dtype == dtype and q.engine is None
    assert all(p.dtype == dtype for p in q.parameters())
    x = _calibration(net)[0]
    with torch.inference_mode():
        out = q(x)
    assert out.dtype == torch.float32
    _close(net(x).detach(), out, 0.05)
    fp32_bytes, q_bytes = _sizes(net, q, tmp_path)
    assert fp32_bytes / q_bytes > 1.8
    with torch.inference_mode():
        assert torch.equal(load_quantized(tmp_path / "q")(x), out)


def test_token_inputs_stay_integers_in_half_mode():
    net = _net(LSTM)
    q = quantize(net, "bf16", speed_check=False)
    x = _calibration(net)[0]
    assert q(x).dtype == torch.float32
    assert q.example_input(3).dtype == torch.long


def test_no_deprecation_warnings_reach_the_user(tmp_path):
    net = _net(CONV)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize(net, "int8-static", calibration=_calibration(net), speed_check=False)
        q(_calibration(net)[0])
        save_quantized(q, tmp_path)
        load_quantized(tmp_path)(_calibration(net)[0])
        quantize(_net(LSTM), "int8-dynamic", speed_check=False)
    assert [str(w.message) for w in caught] == []


def test_bad_mode_and_missing_calibration_are_one_line_errors(tmp_path):
    net = _net(DENSE)
    with pytest.raises(ArchlabError, match=r"mode must be one of .*Received: 'int4'") as e:
        quantize(net, "int4")
    assert "\n" not in str(e.value)
    with pytest.raises(ArchlabError, match=r"calibration=None; pass calibration="):
        quantize(_net(CONV), "int8")
    with pytest.raises(ArchlabError, match=r"engine must be one of"):
        quantize(net, "int8", engine="tpu")
    with pytest.raises(ArchlabError, match=r"tolerance"):
        quantize(net, "auto", tolerance=-1)
    conv_only = build({"input": {"shape": [1, 8, 8]}, "model": [{"conv2d": {"out": 4, "kernel": 3}}, "flatten"]})
    with pytest.raises(ArchlabError, match=r"int8-dynamic quantizes linear, LSTM and GRU"):
        quantize(conv_only, "int8-dynamic")
    with pytest.raises(ArchlabError, match=r"must hold quantized.json"):
        load_quantized(tmp_path)
    with pytest.raises(ArchlabError, match=r"already quantized"):
        quantize(quantize(net, "bf16", speed_check=False), "int8")


def test_a_changed_file_is_refused_with_one_line(tmp_path):
    net = _net(DENSE)
    save_quantized(quantize(net, "int8", speed_check=False), tmp_path)
    meta = json.loads((tmp_path / QUANTIZED_META).read_text())
    meta["spec"]["model"][1] = {"linear": 100}  # weights no longer fit the spec
    (tmp_path / QUANTIZED_META).write_text(json.dumps(meta))
    with pytest.raises(ArchlabError, match=r"does not fit the model its spec builds") as e:
        load_quantized(tmp_path)
    assert "\n" not in str(e.value)


def _fake_times(times):
    def fake(models, x, **kwargs):
        return {k: times[m.mode if hasattr(m, "mode") else "fp32"] for k, m in models.items()}
    return fake


def test_a_result_slower_than_fp32_says_so(monkeypatch):
    monkeypatch.setattr("archlab.compress._quantize.time_candidates",
                        _fake_times({"fp32": 1.0, "int8-dynamic": 2.0}))
    with pytest.warns(QuantizationWarning, match=r"slower than fp32 on this machine: 0.50×"):
        q = quantize(_net(DENSE), "int8")
    assert q.mode == "int8-dynamic" and "slower than fp32" in q.notes[0]


def test_a_result_faster_than_fp32_has_no_note(monkeypatch):
    monkeypatch.setattr("archlab.compress._quantize.time_candidates",
                        _fake_times({"fp32": 2.0, "int8-dynamic": 1.0}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationWarning)
        assert quantize(_net(DENSE), "int8").notes == ()


def _labelled(net, n=256):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, *net.input_shape, generator=g)
    with torch.inference_mode():
        y = net(x).argmax(-1)
    return Split(x, y)


def test_auto_keeps_the_fastest_candidate_within_tolerance(monkeypatch):
    net = _net(DENSE)
    monkeypatch.setattr("archlab.compress._quantize.time_candidates",
                        _fake_times({"fp32": 4.0, "int8-dynamic": 2.0, "int8-static": 1.0, "bf16": 3.0,
                                     "fp16": 5.0}))
    q = quantize(net, "auto", calibration=_calibration(net), data=_labelled(net), tolerance=100)
    assert q.mode == "int8-static"
    assert {c["candidate"] for c in q.candidates} == {
        "fp32", "int8-dynamic@x86", "int8-dynamic@onednn", "int8-static@x86", "int8-static@onednn", "bf16", "fp16"}
    assert q.notes[-1].startswith("auto: chose int8-static@")


def test_auto_refuses_a_candidate_outside_tolerance(monkeypatch):
    net = _net(DENSE)
    monkeypatch.setattr("archlab.compress._quantize.time_candidates",
                        _fake_times({"fp32": 4.0, "int8-dynamic": 2.0, "int8-static": 1.0, "bf16": 3.0,
                                     "fp16": 5.0}))
    monkeypatch.setattr("archlab.compress._quantize._accuracy",
                        lambda m, data: {"int8-static": 0.90}.get(m.mode, 0.996))
    q = quantize(net, "auto", calibration=_calibration(net), data=_labelled(net))
    assert q.mode == "int8-dynamic"  # static is faster but 9.6 points worse; dynamic is equal
    refused = [c for c in q.candidates if not c["within_tolerance"]]
    assert {c["mode"] for c in refused} == {"int8-static"}


def test_auto_keeps_fp32_when_nothing_is_faster_and_says_so(monkeypatch, tmp_path):
    net = _net(LSTM)
    monkeypatch.setattr("archlab.compress._quantize.time_candidates",
                        _fake_times({"fp32": 1.0, "int8-dynamic": 2.0, "int8-static": 2.0, "bf16": 3.0,
                                     "fp16": 5.0}))
    q = quantize(net, "auto", calibration=_calibration(net))  # scored by agreement with fp32
    assert q.mode == "fp32" and "kept fp32" in q.notes[-1]
    x = _calibration(net)[0]
    with torch.inference_mode():
        assert torch.equal(q(x), net(x))
    save_quantized(q, tmp_path)
    with torch.inference_mode():
        assert torch.equal(load_quantized(tmp_path)(x), q(x))


def test_auto_measures_for_real_and_returns_a_consistent_choice():
    net = _net(DENSE)
    q = quantize(net, "auto", calibration=_calibration(net), data=_labelled(net))
    best = min((c for c in q.candidates if c["within_tolerance"]), key=lambda c: c["seconds"])
    assert (q.mode, q.engine) == (best["mode"], best["engine"])
    assert all(c["seconds"] > 0 for c in q.candidates)


# --------------------------------------------------------------------------- archlab compress --quantize

@pytest.fixture(scope="module")
def parent_run(tmp_path_factory):
    """A small finished classifier run on digits (its own store)."""
    from archlab.train import fit

    store = tmp_path_factory.mktemp("quant-store")
    spec = {"name": "dense", "input": {"shape": [1, 8, 8]},
            "model": ["flatten", {"linear": 64}, "relu", {"linear": "$num_classes"}], "vars": {"num_classes": 10}}
    run = fit(spec, data="digits", epochs=1, quiet=True, store=store, seed=0)
    return run.run_id, store


def _main(monkeypatch, capsys, *args):
    import sys

    import archlab.cli._app as cli

    monkeypatch.setattr(sys, "argv", ["archlab", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_compress_quantize_makes_a_linked_run_with_quantized_weights(parent_run, monkeypatch, capsys):
    from archlab.compress import read_compression
    from archlab.runs import open_store

    run_id, store = parent_run
    monkeypatch.setenv("ARCHLAB_HOME", str(store))
    code, out, err = _main(monkeypatch, capsys, "compress", run_id, "--quantize", "int8")
    assert code in (0, None), err
    assert "size on disk" in out and "before" in out
    st = open_store(store)
    child = next(r for r in st.list_runs() if r.tags.get("parent") == run_id)
    assert child.status == "finished" and "quantize int8" in child.tags["compression"]
    folder = st.run_dir(child.run_id)
    q = load_quantized(folder)
    assert q.mode == "int8-dynamic"
    x = torch.randn(5, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(load_run_quantized(child.run_id, store=store)(x), q(x))
    with pytest.raises(ArchlabError, match=r"holds no quantized model"):
        load_run_quantized(run_id, store=store)
    record = read_compression(st, child.run_id)
    step = record["steps"][-1]
    assert step["kind"] == "quantize" and step["mode"] == "int8-dynamic"
    assert record["after"]["size_bytes"] == (folder / QUANTIZED_WEIGHTS).stat().st_size
    assert record["ratios"]["size_bytes"] > 3
    assert record["after"]["params"] == record["before"]["params"]
    assert record["after"]["macs"] == record["before"]["macs"]
    assert abs(record["ratios"]["accuracy_points"]) <= 2.0
    # the child's test metrics are the quantized model's (in the task's evaluation batches: dynamic
    # int8 scales each batch's activations by that batch's range)
    from archlab.core import thaw
    from archlab.data import load_dataset
    from archlab.train import TrainSettings

    test = load_dataset("digits", seed=0).test
    bs = TrainSettings.from_mapping(thaw(child.settings)).eval_batch("cpu")
    with torch.inference_mode():
        correct = sum(int((q(test.x[i:i + bs]).argmax(-1) == test.y[i:i + bs]).sum()) for i in range(0, len(test), bs))
    assert child.test_metrics["acc"] == pytest.approx(correct / len(test), abs=1e-9)
    # A quantized run is not shipped or compressed again from its float weights: one line, exit 2.
    runs_before = len(st.list_runs())
    for args in (["export", child.run_id, "--onnx", str(store / "q.onnx")], ["export", child.run_id, "--folder",
                 str(store / "shipped")], ["compress", child.run_id, "--prune", "0.5"]):
        code, out, err = _main(monkeypatch, capsys, *args)
        assert code == 2 and "holds a quantized model" in err and run_id in err and "Traceback" not in err, err
    assert len(st.list_runs()) == runs_before and not (store / "q.onnx").exists() and not (store / "shipped").exists()


def test_compress_quantize_bad_mode_is_one_line_and_writes_nothing(parent_run, monkeypatch, capsys):
    from archlab.runs import open_store

    run_id, store = parent_run
    monkeypatch.setenv("ARCHLAB_HOME", str(store))
    before = len(open_store(store).list_runs())
    code, out, err = _main(monkeypatch, capsys, "compress", run_id, "--quantize", "int4")
    assert code == 2
    assert err.startswith("error: --quantize must be one of int8,") and err.count("\n") == 1
    assert len(open_store(store).list_runs()) == before


def test_compress_prunes_then_quantizes(parent_run):
    from archlab.compress import compress

    run_id, store = parent_run
    result = compress(run_id, prune_ratio=0.5, finetune=0, quantize_mode="bf16", store=store, quiet=True,
                      repeats=2)
    kinds = [s["kind"] for s in result.steps]
    assert kinds == ["prune", "quantize"] and result.steps[-1]["mode"] == "bf16"
    q = load_run_quantized(result.run_id, store=store)
    assert q.mode == "bf16" and q.spec.to_dict()["model"][1]["linear"] == {"out": 32}  # the pruned spec
    assert result.ratios["size_bytes"] > 3  # half the units, half the bits
