"""archlab.compress: measurements before and after compression, and `archlab compress`."""

from __future__ import annotations

import torch
from torch import nn

from archlab import build, inspect
from archlab.compress import compare_measurements, count_macs, measure
from archlab.data import Split


def test_measure_reports_params_macs_size_latency_and_restores_threads():
    net = build({"input": {"shape": [4]}, "model": [{"linear": 8}, "relu", {"linear": 3}]})
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        m = measure(net, torch.randn(5, 4), batches=(1, 7), repeats=3, warmup=1)
        assert torch.get_num_threads() == 2  # one thread while timing, restored after
    finally:
        torch.set_num_threads(threads)
    assert m["params"] == 4 * 8 + 8 + 8 * 3 + 3
    assert m["macs"] == 4 * 8 + 8 * 3
    assert m["threads"] == 1
    assert m["size_bytes"] > 4 * m["params"]  # fp32 weights plus the safetensors header
    assert set(m["latency"]) == {"1", "7"}
    for t in m["latency"].values():
        assert t["runs"] == 3 and t["min"] <= t["q1"] <= t["median"] <= t["q3"] <= t["max"]
    assert m["accuracy"] is None
    assert net.training  # mode restored


def test_measure_macs_agree_with_the_inspector_on_a_residual_cnn():
    net = build("zoo:resnet-mini")
    assert count_macs(net, net.example_input(1)) == inspect("zoo:resnet-mini").macs_per_sample


def test_measure_accuracy_on_a_split():
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([0, 1, 1, 1])
    m = measure(lin, x, data=Split(x, y), batches=(1,), repeats=2)
    assert m["accuracy"] == 0.75


def test_compare_measurements_gives_ratios():
    before = {"params": 100, "macs": 400, "size_bytes": 1000, "accuracy": 0.98,
              "latency": {"1": {"median": 3.0}, "256": {"median": 30.0}}}
    after = {"params": 25, "macs": 100, "size_bytes": 250, "accuracy": 0.97,
             "latency": {"1": {"median": 1.0}, "256": {"median": 10.0}}}
    r = compare_measurements(before, after)
    assert r["params"] == r["macs"] == r["size_bytes"] == 4.0
    assert r["latency"] == {"1": 3.0, "256": 3.0}
    assert r["accuracy_points"] == -1.0


# ------------------------------------------------------------------ archlab compress

import json  # noqa: E402
import re  # noqa: E402

import pytest  # noqa: E402
from clirun import run_main as _main  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from archlab import TrainingError  # noqa: E402
from archlab.cli import app  # noqa: E402
from archlab.compare import write_compression_report  # noqa: E402
from archlab.compress import COMPRESSION_JSON, compress, read_compression  # noqa: E402
from archlab.runs import open_store  # noqa: E402
from archlab.train import fit, load_run_model  # noqa: E402

runner = CliRunner()


@pytest.fixture
def parent(archlab_home) -> str:
    run = fit("zoo:mlp", data="digits", epochs=2, batch_size=128, quiet=True)
    return run.run_id


def test_compress_makes_a_new_linked_run_measured_before_and_after(parent, archlab_home):
    result = runner.invoke(app, ["compress", parent, "--prune", "0.5", "--round-to", "8", "--finetune", "1",
                                 "--out", "mlp-half"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "epoch 1/1" in result.output  # fine-tuning shows the training progress (on stderr)
    for row in ("params", "MACs / sample", "size on disk", "latency, batch 1", "latency, batch 256", "test accuracy"):
        assert row in out
    child_id = re.search(r"^run\s+(r[0-9a-f]{8})", out, re.MULTILINE).group(1)
    store = open_store(archlab_home)
    child = store.get_run(child_id)
    assert child.status == "finished" and child.name == "mlp-half"
    assert child.tags["parent"] == parent and "structured 0.5" in child.tags["compression"]
    assert child.spec["model"][1] == {"linear": {"out": 128}}  # 256 units -> 128
    saved = json.loads((store.run_dir(child_id) / COMPRESSION_JSON).read_text())
    assert saved["parent"] == parent and saved["ratios"]["macs"] > 1.9
    assert saved["before"]["accuracy"] == pytest.approx(store.get_run(parent).test_metrics["acc"], abs=1e-6)
    assert saved["after"]["params"] < saved["before"]["params"] / 2
    assert read_compression(store, child_id)["run"] == child_id
    shown = runner.invoke(app, ["show", child_id]).stdout
    assert f"from      {parent} (" in shown and "structured 0.5" in shown  # show names where it came from
    # the stored run reloads from safetensors with bit-identical logits
    net1, _ = load_run_model(child_id, store=store)
    net2, _ = load_run_model(child_id, store=store)
    x = net1.example_input(4)
    net1.eval()
    net2.eval()
    assert torch.equal(net1(x), net2(x))
    page = write_compression_report(parent, archlab_home / "c.html", store=store).read_text()
    assert "Compressed variants" in page and child_id in page and page.count("<svg") == 3


def test_compress_without_finetuning_keeps_the_pruned_weights_and_unstructured_keeps_the_shapes(parent,
                                                                                                archlab_home):
    store = open_store(archlab_home)
    pruned = compress(parent, prune_ratio=0.5, finetune=0, quiet=True, repeats=2, store=store)
    parent_net, _ = load_run_model(parent, store=store)
    child_net, record = load_run_model(pruned.run_id, store=store)
    assert record.status == "finished" and "acc" in record.test_metrics
    assert child_net.get_submodule("model.1").weight.shape == (128, 64)
    sparse = compress(parent, prune_ratio=0.7, structured=False, finetune=0, quiet=True, repeats=2, store=store)
    assert sparse.ratios["macs"] == 1.0 and sparse.ratios["params"] == 1.0  # dense zeros: the same work
    assert sparse.steps[0]["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert "do not change" in sparse.steps[0]["note"]
    assert set(sparse.ratios["latency"]) == {"1", "256"}  # measured, not assumed
    assert parent_net.get_submodule("model.1").weight.shape == (256, 64)


def test_compress_taylor_ranks_by_gradients_of_training_batches(parent, archlab_home):
    result = compress(parent, prune_ratio=0.5, method="taylor", finetune=0, quiet=True, repeats=2)
    assert result.steps[0]["method"] == "taylor"
    assert result.after["macs"] < result.before["macs"]


@pytest.mark.parametrize("args, match", [
    (["--prune", "1.5"], "0 <= ratio < 1"),
    (["--prune", "-0.1"], "0 <= ratio < 1"),
    (["--prune", "0.5", "--method", "l3"], "--method"),
    (["--prune", "0.5", "--unstructured", "--finetune", "2"], "--finetune"),
    ([], "nothing to do"),
])
def test_bad_compress_input_is_one_line_exit_2_and_writes_nothing(parent, archlab_home, monkeypatch, capsys,
                                                                  args, match):
    store = open_store(archlab_home)
    before = [r.run_id for r in store.list_runs()]
    code, out, err = _main(monkeypatch, capsys, "compress", parent, *args)
    assert code == 2 and err.startswith("error: ") and match in err and err.count("\n") == 1, err
    assert [r.run_id for r in store.list_runs()] == before


def test_compress_refuses_a_run_that_is_not_finished(parent, archlab_home, monkeypatch, capsys):
    store = open_store(archlab_home)
    store.set_status(parent, "interrupted", message="stopped")
    code, _, err = _main(monkeypatch, capsys, "compress", parent, "--prune", "0.5")
    assert code == 2 and "not finished" in err and err.count("\n") == 1
    assert len(store.list_runs()) == 1


def test_fit_starts_from_initial_weights(archlab_home):
    spec = {"input": {"shape": [1, 8, 8]}, "model": ["flatten", {"linear": 10}]}
    from archlab import build

    start = build(spec, seed=5).state_dict()
    run = fit(spec, data="digits", epochs=1, lr=1e-12, quiet=True, initial_weights=start)
    for key, value in run.model.state_dict().items():
        torch.testing.assert_close(value.cpu(), start[key], rtol=0, atol=1e-6)
    with pytest.raises(TrainingError, match="initial_weights"):
        fit(spec, data="digits", epochs=1, quiet=True, initial_weights={"model.1.weight": torch.zeros(3, 3)})


def test_a_pruned_run_exports_to_onnx_and_verifies_in_onnxruntime(parent, archlab_home, tmp_path):
    from archlab.deploy import export_onnx

    child = compress(parent, prune_ratio=0.5, round_to=8, finetune=1, quiet=True, repeats=2)
    exported = export_onnx(child.run_id, tmp_path / "pruned.onnx", verify=True)
    assert exported.path.is_file() and set(exported.max_diff) == {1, 2, 7}
    assert max(exported.max_diff.values()) <= 1e-4


def test_a_distilled_run_exports_to_onnx_and_verifies_in_onnxruntime(parent, archlab_home, tmp_path):
    from archlab.compress import distill
    from archlab.deploy import export_onnx

    student = {"name": "student", "input": {"shape": [1, 8, 8]},
               "model": ["flatten", {"linear": 32}, "relu", {"linear": 10}]}
    run = distill(parent, student, epochs=1, batch_size=128, quiet=True)
    exported = export_onnx(run.run_id, tmp_path / "student.onnx", verify=True)
    assert max(exported.max_diff.values()) <= 1e-4
