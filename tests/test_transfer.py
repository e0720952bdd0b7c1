"""Transfer learning: --init-from a run or a file (matched by name and shape, strict), --map,
--freeze and --bn frozen, resume of such a run; GPT-2 weights in Hugging Face's layout."""

from __future__ import annotations

import json

import pytest
import torch
from clirun import run_main as _main
from interrupts import interrupt_at
from safetensors.torch import load_file, save_file

from archlab.core import SpecError, StoreError
from archlab.model import build
from archlab.runs import open_store
from archlab.spec import load_spec
from archlab.train import fit, init_weights, plan_init, read_source, resume
from archlab.train._init_from import _compile, _rename

# conv -> batch norm -> relu -> flatten -> head: model.0, model.1 (BN), model.4 (the head).
NET = {"name": "tiny-bn", "input": {"shape": [1, 8, 8]},
       "model": [{"conv2d": {"out": 4, "kernel": 3, "padding": "same"}}, "batchnorm", "relu", "flatten",
                 {"linear": "$num_classes"}]}
FAST = dict(data="digits", epochs=1, batch_size=128, quiet=True)


def _net(classes: int = 10, seed: int = 0):
    spec = load_spec(NET).with_vars({"num_classes": classes}, strict=False)
    return build(spec, seed=seed)


def _bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "store")


@pytest.fixture
def source(store):
    return fit(NET, store=store, seed=1, **FAST)


# ------------------------------------------------------------------ --init-from a run


def test_frozen_weights_and_batch_norm_statistics_stay_byte_identical(store, source):
    before = load_file(source.directory / "best.safetensors")
    run = fit(NET, store=store, init_from=source.run_id[:6], freeze=["model.0"], bn="frozen", lr=0.01, **FAST)
    after = run.model.state_dict()
    for name in ("model.0.weight", "model.0.bias", "model.1.running_mean", "model.1.running_var",
                 "model.1.num_batches_tracked"):
        assert _bytes(after[name]) == _bytes(before[name]), name
    # The rest started from the source and trained: the BN affine weights and the head moved.
    for name in ("model.1.weight", "model.4.weight"):
        assert not torch.equal(after[name], before[name]), name
    assert not run.model.model[0].weight.requires_grad
    settings = store.get_run(run.run_id).settings
    assert settings["init_from"] == source.run_id  # resolved from the prefix, so a resume finds it
    assert list(settings["freeze"]) == ["model.0"] and settings["bn"] == "frozen"


def test_without_freezing_batch_norm_statistics_do_change(store, source):
    before = load_file(source.directory / "best.safetensors")
    after = fit(NET, store=store, init_from=source.run_id, **FAST).model.state_dict()
    assert not torch.equal(after["model.1.running_mean"], before["model.1.running_mean"])
    assert after["model.1.num_batches_tracked"] > before["model.1.num_batches_tracked"]


def test_init_from_starts_where_the_source_ended(store, source):
    """One epoch from the source's weights is better than the source's first epoch from scratch."""
    run = fit(NET, store=store, init_from=source.run_id, seed=1, **FAST)
    assert run.history[0]["train_loss"] < source.history[0]["train_loss"]


def test_resume_of_an_init_from_run_is_bit_exact_and_does_not_reread_the_source(store, tmp_path, monkeypatch):
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_model

    save_model(_net(seed=5), str(weights))
    settings = dict(data="digits", epochs=2, batch_size=128, seed=3, quiet=True, store=store,
                    init_from=str(weights), freeze=["model.0.*"], bn="frozen")
    reference = fit(NET, **settings)
    interrupt_at(monkeypatch, 13)  # mid-epoch 2 (10 steps an epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(NET, **settings)
    [record] = store.list_runs(status="interrupted")
    weights.write_bytes(b"not weights any more")  # a resume reads the checkpoint, never the source
    resumed = resume(record.run_id, store=store, quiet=True)
    assert [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")} for h in resumed.history] == \
        [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")} for h in reference.history]
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert all(_bytes(a[k]) == _bytes(b[k]) for k in a)
    for name in ("checkpoint.safetensors", "best.safetensors"):
        x, y = load_file(reference.directory / name), load_file(resumed.directory / name)
        assert all(_bytes(x[k]) == _bytes(y[k]) for k in x)


# ------------------------------------------------------------------ matching rules


def test_a_new_head_by_dropping_the_old_one(tmp_path):
    from safetensors.torch import save_model

    path = tmp_path / "w.safetensors"
    old = _net(10, seed=1)
    save_model(old, str(path))
    net = _net(5, seed=2)
    head = net.model[4].weight.clone()
    with pytest.raises(SpecError, match=r"model.4.weight \(10, 256\) vs model.4.weight \(5, 256\).*"
                                        r"--map 'model.4.\*='.*--partial") as info:
        init_weights(net, path)
    assert info.value.report.count("shape") == 2 and "\n" not in str(info.value)
    report = init_weights(net, path, map=["model.4.*="])
    assert {r.target for r in report.rows if r.status == "new"} == {"model.4.weight", "model.4.bias"}
    assert report.count("dropped") == 2 and report.count("loaded") == 7
    assert torch.equal(net.model[0].weight, old.model[0].weight)
    assert torch.equal(net.model[4].weight, head)  # the new head keeps its own initialisation
    partial = init_weights(_net(5), path, partial=True)
    assert partial.count("shape") == 2 and partial.count("loaded") == 7  # the head: its own initialisation


def test_strict_refuses_a_source_tensor_that_matches_nothing(tmp_path):
    path = tmp_path / "w.safetensors"
    state = {k: v.contiguous() for k, v in _net().state_dict().items()}
    save_file({**state, "extra.weight": torch.zeros(3)}, str(path))
    with pytest.raises(SpecError, match=r"1 source tensor\(s\) do not fit.*extra.weight matches nothing"):
        init_weights(_net(), path)
    assert init_weights(_net(), path, partial=True).count("unused") == 1
    assert init_weights(_net(), path, map=["extra="]).count("loaded") == len(state)


def test_a_file_with_no_matching_names_is_refused_with_the_table(tmp_path, monkeypatch, capsys):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.conv.weight": torch.zeros(4, 1, 3, 3), "encoder.conv.bias": torch.zeros(4)}, str(path))
    with pytest.raises(SpecError, match="none of its 2 tensors matches"):
        init_weights(_net(), path, partial=True)
    spec = tmp_path / "net.yaml"
    spec.write_text(json.dumps(NET))
    code, out, err = _main(monkeypatch, capsys, "train", str(spec), "--epochs", "1", "--init-from", str(path))
    assert code == 2
    [error] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "none of its 2 tensors matches" in error and "--map" in error
    assert "encoder.conv.weight" in err and "unused: matches nothing" in err and "new (not in the source)" in err
    assert not open_store().list_runs()  # refused before anything was recorded
    # Renamed onto the model, the same file loads (conv only; the rest is new).
    code, out, err = _main(monkeypatch, capsys, "train", str(spec), "--epochs", "1", "--init-from", str(path),
                           "--map", "encoder.conv=model.0", "--quiet")
    assert code == 0, err


def test_map_renames_prefixes_and_globs():
    def rename(name, rule):
        return _rename(name, _compile(rule))

    assert rename("backbone.0.weight", "backbone=model") == "model.0.weight"
    assert rename("backbone", "backbone=model") == "model"
    assert rename("backbones.0.weight", "backbone=model") is None  # a prefix ends at a dot
    assert rename("enc.3.conv.weight", "enc.*.conv.*=model.*.*") == "model.3.weight"
    assert rename("head.weight", "head.*=") == ""  # dropped
    assert rename("model.4.weight", "model.[34].*=") == ""
    with pytest.raises(SpecError, match="OLD=NEW"):
        _compile("nonsense")
    with pytest.raises(SpecError, match="captures 1"):
        _compile("a.*=b.*.*")


def test_bad_sources_freeze_patterns_and_bn(tmp_path, store, source):
    with pytest.raises(StoreError, match="no such weights file"):
        read_source(tmp_path / "missing.safetensors")
    with pytest.raises(StoreError, match="not a file, and not a run"):
        read_source("rnothere", store)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(StoreError, match="not a safetensors file"):
        read_source(tmp_path / "bad.safetensors")
    with pytest.raises(SpecError, match="--freeze 'nothing.*': matches no parameter"):
        fit(NET, store=store, freeze=["nothing.*"], **FAST)
    with pytest.raises(SpecError, match="freezes every parameter"):
        fit(NET, store=store, freeze=["*"], **FAST)
    with pytest.raises(SpecError, match="--bn frozen: this model has no batch-norm"):
        fit({"name": "flat", "model": ["flatten", {"linear": "$num_classes"}]}, store=store, bn="frozen", **FAST)
    with pytest.raises(SpecError, match="bn must be one of train, frozen"):
        fit(NET, store=store, bn="eval", **FAST)
    with pytest.raises(SpecError, match="give init_from too"):
        fit(NET, store=store, map=["a=b"], **FAST)
    assert len(store.list_runs()) == 1  # only the source: each refusal came before recording a run


def test_resume_refuses_new_transfer_flags(monkeypatch, capsys, source):
    code, _, err = _main(monkeypatch, capsys, "train", "--resume", source.run_id, "--freeze", "model.0")
    assert code == 2 and "drop --freeze" in err


# ------------------------------------------------------------------ GPT-2 from Hugging Face

VARS = {"vocab_size": 100, "dim": 64, "heads": 4, "depth": 2}


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    """A small randomly initialised transformers GPT-2 saved in its own layout (nothing downloaded)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=64, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial layer norms and biases, so every tensor's mapping matters
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("hf-gpt2")
    model.save_pretrained(folder)
    ids = torch.randint(0, 100, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits
    return folder, ids, logits


def _gpt2(length: int, device: str = "cpu"):
    spec = load_spec("zoo:gpt2").with_vars(VARS).with_input((length,), "long")
    return build(spec, seed=0, device=device).eval()


def test_hf_gpt2_logits_equal_transformers(hf_gpt2):
    folder, ids, logits = hf_gpt2
    assert "transformer.h.0.attn.c_attn.weight" in load_file(folder / "model.safetensors")
    net = _gpt2(24)  # a shorter context than the file's 32 positions: the first 24 rows load
    report = init_weights(net, folder / "model.safetensors", map=["hf-gpt2"])
    assert report.count("loaded") == 28 and not report.problems and not report.notes
    with torch.no_grad():
        ours = net(ids)
    assert (ours - logits).abs().max() < 1e-5
    # The trainer plans on the meta device: the same converter works there.
    assert plan_init(_gpt2(24, "meta"), read_source(folder), ["hf-gpt2"]).count("loaded") == 28


def test_archlab_import_hf_gpt2_writes_archlab_names(hf_gpt2, tmp_path, monkeypatch, capsys):
    folder, ids, logits = hf_gpt2
    out = tmp_path / "gpt2.safetensors"
    code, stdout, err = _main(monkeypatch, capsys, "import", "hf-gpt2", str(folder), "--out", str(out),
                              "--context", "24")
    assert code == 0, err
    assert "--set vocab_size=100 --set dim=64 --set depth=2 --set heads=4" in stdout
    assert "transposed" in err and "28 loaded" in err
    net = _gpt2(24)
    report = init_weights(net, out)  # plain names now: no converter
    assert report.count("loaded") == 28
    with torch.no_grad():
        assert (net(ids) - logits).abs().max() < 1e-5


def test_hf_gpt2_config_that_archlab_does_not_compute_is_refused(hf_gpt2, tmp_path):
    folder, _, _ = hf_gpt2
    local = tmp_path / "hf"
    local.mkdir()
    (local / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    for key, value, match in (("activation_function", "gelu", "gelu with the tanh approximation"),
                              ("n_head", 8, "--set heads=8"),
                              ("layer_norm_epsilon", 1e-6, "eps 1e-05"),
                              ("scale_attn_by_inverse_layer_idx", True, "1/sqrt")):
        (local / "config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(SpecError, match=match):
            init_weights(_gpt2(24), local, map=["hf-gpt2"])
    (local / "config.json").unlink()  # without a config the heads cannot be checked: the table says so
    assert init_weights(_gpt2(24), local, map=["hf-gpt2"]).notes
    with pytest.raises(SpecError, match="none of its 28 tensors.*--map hf-gpt2"):
        init_weights(_gpt2(24), local)  # HF names without the converter


def test_hf_gpt2_older_layout_with_mask_buffers_and_a_saved_lm_head(hf_gpt2, tmp_path, monkeypatch, capsys):
    """The original GPT-2 files: no `transformer.` prefix, causal-mask buffers, lm_head saved."""
    folder, ids, logits = hf_gpt2
    state = {k.removeprefix("transformer."): v for k, v in load_file(folder / "model.safetensors").items()}
    state |= {f"h.{i}.attn.bias": torch.ones(1, 1, 32, 32).tril() for i in range(2)}
    old = tmp_path / "old.safetensors"
    save_file({**state, "lm_head.weight": state["wte.weight"].clone()}, str(old))
    net = _gpt2(24)
    assert init_weights(net, old, map=["hf-gpt2"]).count("loaded") == 28
    with torch.no_grad():
        assert (net(ids) - logits).abs().max() < 1e-5
    untied = tmp_path / "untied.safetensors"
    save_file({**state, "lm_head.weight": torch.zeros_like(state["wte.weight"])}, str(untied))
    with pytest.raises(SpecError, match="untied output layer"):
        init_weights(_gpt2(24), untied, map=["hf-gpt2"])
    code, _, err = _main(monkeypatch, capsys, "import", "hf-gpt2", str(tmp_path / "none.safetensors"))
    assert code == 2 and err.startswith("error: import hf-gpt2 ") and "no such folder or file" in err and "Hugging Face GPT-2 folder" in err
