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
