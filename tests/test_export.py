"""archlab export: ONNX files (dynamo exporter, dynamic batch) verified in onnxruntime at batch
1, 2 and 7 for every zoo spec small enough to build here and for a trained run; a model
folder that `archlab.load` turns back into the run's model, bit for bit; one-line errors."""

from __future__ import annotations

import os

import pytest
import torch
from clirun import run_main as _main
from safetensors import safe_open

import archlab
from archlab.core import ArchlabError, StoreError
from archlab.deploy import MODEL_WEIGHTS, Shipped, export_folder, export_onnx
from archlab.runs import PREPROCESSING_FILE, SPEC_FILE, open_store
from archlab.spec import load_spec, zoo_names
from archlab.train import fit, load_run_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SKIP = {"llama-7b": "6.7B parameters: its fp32 weights (27 GB) cannot be built on this machine"}
# Specs of several named inputs (bert-base, digits-qa): ONNX export takes one input so far and says so (test below).
SKIP |= {n: "several named inputs" for n in zoo_names() if load_spec(f"zoo:{n}").inputs is not None}
# Exported and verified, but too slow for the suite (measured on 2 loaded cores): ARCHLAB_TEST_BIG=1 runs them.
BIG = {"gpt2": "124M parameters, context 1024: build, export and verify took 218 s here",
       "vgg11": "133M parameters (a 530 MB ONNX file): 12 s of CPU and 40 s here even at 3x32x32"}
if not os.environ.get("ARCHLAB_TEST_BIG"):
    SKIP |= BIG
# The exporter unrolls recurrent layers over their time steps (69 s for lstm-classifier's 200;
# the additive decoder loops over the target): these are exported with fewer steps, the same
# graph per step. Big images are exported at 3x32x32 (adaptive pooling keeps the same graph).
SHORT = {"lstm-classifier": (16,), "rnn-imdb": (16,), "seq2seq-additive": (4,), "resnet18": (3, 32, 32),
         "vgg11": (3, 32, 32)}


def _shipped(name: str) -> Shipped:
    net = archlab.build(f"zoo:{name}", input_shape=SHORT.get(name), seed=0)
    return Shipped(net.eval(), net.spec, {"task": "classify"}, name)


@pytest.mark.parametrize("name", [n for n in zoo_names() if n not in SKIP])
def test_every_zoo_spec_exports_and_verifies_in_onnxruntime(name, tmp_path):
    result = export_onnx(_shipped(name), tmp_path / f"{name}.onnx", verify=True)
    assert sorted(result.max_diff) == [1, 2, 7]
    assert all(d <= 1e-4 for d in result.max_diff.values()), result.max_diff
    graph = onnx.load(str(result.path)).graph
    assert [i.name for i in graph.input] == list(result.inputs)
    for given in graph.input:  # the batch dimension is symbolic, every other one fixed
        dims = given.type.tensor_type.shape.dim
        assert dims[0].dim_param and all(d.dim_value > 0 for d in dims[1:])


def test_zoo_skips_are_named():
    assert set(SKIP) | set(BIG) | set(SHORT) <= set(zoo_names())


# --------------------------------------------------------------------------- trained runs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return open_store(tmp_path_factory.mktemp("export-store"))


@pytest.fixture(scope="module")
def mlp_run(store):
    return fit("zoo:mlp", data="digits", epochs=1, batch_size=256, quiet=True, store=store)


@pytest.fixture(scope="module")
def lm_run(store, tmp_path_factory):
    """A tiny tied-embedding GPT trained one epoch on a small text."""
    text = tmp_path_factory.mktemp("text") / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    spec = {"name": "tiny-gpt", "input": {"shape": [16], "dtype": "long"}, "vars": {"vocab_size": 32},
            "model": [{"embedding": {"vocab": "$vocab_size", "dim": 16}}, "pos_embedding",
                      {"decoder_block": {"heads": 2}}, "layernorm", "unembed"],
            "train": {"task": "language_model"}}
    return fit(spec, data=f"text:{text}?context=16", epochs=1, batch_size=32, quiet=True, store=store)


def test_a_trained_run_exports_and_verifies(mlp_run, store, tmp_path):
    result = export_onnx(mlp_run.run_id, tmp_path / "mlp.onnx", verify=True, store=store)
    assert max(result.max_diff.values()) <= 1e-4 and result.path.stat().st_size > 0


def test_a_model_folder_loads_offline_with_bit_identical_logits(mlp_run, store, tmp_path):
    done = export_folder(mlp_run.run_id, tmp_path / "shipped", store=store)
    files = sorted(p.name for p in done.path.iterdir())
    assert files == sorted(["README.md", MODEL_WEIGHTS, PREPROCESSING_FILE, SPEC_FILE])
    net = archlab.load(done.path)
    assert type(net).__module__.startswith("archlab") and isinstance(net, torch.nn.Module)
    run_net, _ = load_run_model(mlp_run.run_id, store=store)
    x = torch.rand(33, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(x), run_net.eval()(x))
    card = (done.path / "README.md").read_text()
    for needed in (mlp_run.run_id, "digits", "test acc", "parameters", "MACs", "archlab.load"):
        assert needed in card


def test_tied_weights_are_stored_once_and_stay_tied(lm_run, store, tmp_path):
    done = export_folder(lm_run.run_id, tmp_path / "lm", store=store)
    with safe_open(str(done.path / MODEL_WEIGHTS), "pt") as f:
        stored = {k: f.get_tensor(k).numel() for k in f.keys()}  # noqa: SIM118
    net = archlab.load(done.path)
    assert sum(stored.values()) == sum(t.numel() for t in net.state_dict().values())
    table = net.model[0].weight
    assert sum(1 for n in stored.values() if n == table.numel()) == 1  # the (vocab, 16) table, once
    head = next(m for m in net.modules() if type(m).__name__ == "TiedLinear")
    assert head._embedding[0].weight is table
    run_net, _ = load_run_model(lm_run.run_id, store=store)
    x = torch.randint(0, table.shape[0], (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(net(x), run_net.eval()(x))


def test_an_unfinished_run_is_refused_and_nothing_is_written(mlp_run, store, tmp_path):
    rid = store.create_run(name="mlp", data="digits", spec=dict(mlp_run.spec.to_dict()), settings={}, env={},
                           params=1)
    store.set_status(rid, "interrupted")
    with pytest.raises(StoreError, match=r"is interrupted, not finished.*--resume"):
        export_folder(rid, tmp_path / "out", store=store)
    with pytest.raises(StoreError, match="not finished"):
        export_onnx(rid, tmp_path / "m.onnx", store=store)
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.onnx").exists()


def test_a_failed_verification_writes_nothing(mlp_run, store, tmp_path):
    with pytest.raises(ArchlabError, match=r"at batch 1 onnxruntime differs from PyTorch by up to \S+ \(tolerance"):
        export_onnx(mlp_run.run_id, tmp_path / "m.onnx", verify=True, store=store, tolerance=1e-12)
    assert list(tmp_path.iterdir()) == []


def test_without_onnx_installed_the_error_says_what_to_install(mlp_run, store, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ArchlabError, match=r"needs onnxscript.*pip install 'archlab\[onnx\]'"):
        export_onnx(mlp_run.run_id, tmp_path / "m.onnx", store=store)


def test_a_non_empty_folder_is_not_overwritten(mlp_run, store, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ArchlabError, match="not empty"):
        export_folder(mlp_run.run_id, tmp_path, store=store)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_a_broken_folder_is_one_line(tmp_path):
    with pytest.raises(StoreError, match="not found"):
        archlab.load(tmp_path / "nothing")
    (tmp_path / SPEC_FILE).write_text("input: {shape: [4]}\nmodel: [{linear: 2}]\n")
    with pytest.raises(StoreError, match=f"{MODEL_WEIGHTS}, {PREPROCESSING_FILE} missing"):
        archlab.load(tmp_path)


# --------------------------------------------------------------------------- the command


def test_cli_exports_both_and_fails_verification_in_one_line(mlp_run, store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARCHLAB_HOME", str(store.root))
    monkeypatch.chdir(tmp_path)
    code, out, err = _main(monkeypatch, capsys, "export", mlp_run.run_id[:6], "--onnx", "m.onnx", "--verify",
                           "--folder", "shipped")
    assert code == 0, err
    assert "verified in onnxruntime" in out and "batch 7" in out and (tmp_path / "shipped" / SPEC_FILE).exists()
    monkeypatch.setattr("archlab.deploy._onnx.TOLERANCE", 1e-12)
    code, out, err = _main(monkeypatch, capsys, "export", mlp_run.run_id, "--onnx", "again.onnx", "--verify")
    assert code == 2 and err.startswith("error: --verify: at batch 1") and len(err.strip().splitlines()) == 1
    assert "differs from PyTorch by up to" in err and not (tmp_path / "again.onnx").exists()
    code, _, err = _main(monkeypatch, capsys, "export", mlp_run.run_id)
    assert code == 2 and "--onnx PATH" in err


def test_a_model_of_several_inputs_is_refused_in_one_line(tmp_path):
    net = archlab.build("zoo:bert-base", vars={"vocab": 50, "dim": 16, "heads": 2, "depth": 1, "context": 8})
    with pytest.raises(archlab.SpecError, match=r"export --onnx: the model reads 2 named inputs \(tokens, segments\)"):
        export_onnx(Shipped(net.eval(), net.spec, {"task": "classify"}, "bert"), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
