"""Several named inputs and named nodes: `inputs:`, `from:`, `merge:`, `name:`, `memory:`."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import archlab
from archlab.core import ShapeError, SpecError
from archlab.data import DataInfo, Dataset, Split
from archlab.data._dataset import register_dataset
from archlab.layers import Inputs
from archlab.model import checkpoint_repeats, require_one_input
from archlab.spec import Spec, load_spec

TWO_TOWERS = {
    "name": "two-towers",
    "inputs": {"image": {"shape": [1, 8, 8]}, "question": {"shape": [6], "dtype": "long", "vocab": 20}},
    "model": [
        {"flatten": None, "from": "image"},
        {"linear": 32, "name": "seen"},
        {"embedding": {"vocab": 20, "dim": 16}, "from": "question"},
        {"seq_pool": "mean", "name": "asked"},
        {"from": ["seen", "asked"], "merge": "concat"},
        {"linear": 10},
    ],
}


def batch(n: int = 4) -> Inputs:
    g = torch.Generator().manual_seed(0)
    return Inputs(image=torch.randn(n, 1, 8, 8, generator=g), question=torch.randint(0, 20, (n, 6), generator=g))


def test_two_towers_compute_what_the_spec_says() -> None:
    net = archlab.build(TWO_TOWERS)
    x = batch()
    m = net.model
    seen = m[1](m[0](x["image"]))
    asked = m[3](m[2](x["question"]))
    want = m[5](torch.cat([seen, asked], dim=1))
    torch.testing.assert_close(net(x), want)
    # a dict and keywords are the same call
    torch.testing.assert_close(net(dict(x)), want)
    torch.testing.assert_close(net(image=x["image"], question=x["question"]), want)
    assert net.input_names == ("image", "question")
    assert net.input_types["question"].describe() == "(6,) long"
    # state-dict keys follow spec paths, routing adds none
    assert "model.1.weight" in net.state_dict() and "model.2.weight" in net.state_dict()
    assert not any(k.startswith("model.4") for k in net.state_dict())


def test_a_network_of_several_inputs_names_what_is_missing() -> None:
    net = archlab.build(TWO_TOWERS)
    x = batch()
    with pytest.raises(ValueError, match="missing input 'question'"):
        net(image=x["image"])
    with pytest.raises(ValueError, match="reads 2 inputs"):
        net(x["image"])


def test_example_input_draws_ids_in_the_declared_vocab() -> None:
    net = archlab.build(TWO_TOWERS)
    x = net.example_input(64)
    assert isinstance(x, Inputs) and x["question"].max() < 20 and x["image"].dtype == torch.float32
    assert net.example_input(3, device="meta")["question"].device.type == "meta"


def test_spec_round_trip_and_vocab_checks() -> None:
    spec = load_spec(TWO_TOWERS)
    assert Spec.from_dict(spec.to_dict()) == spec
    assert spec.input is None and list(spec.input_specs) == ["image", "question"]
    with pytest.raises(SpecError, match=r"inputs.image.vocab: only token ids have a vocabulary"):
        load_spec({"inputs": {"image": {"shape": [3], "vocab": 4}}, "model": ["identity"]})
    with pytest.raises(SpecError, match="either 'input' .* or 'inputs'"):
        load_spec({"input": [3], "inputs": {"a": [3]}, "model": ["identity"]})
    with pytest.raises(SpecError, match="'1a' is not a valid input name"):
        load_spec({"inputs": {"1a": [3]}, "model": ["identity"]})


@pytest.mark.parametrize("model, fragment", [
    ([{"flatten": None, "from": "image"}, {"linear": 4}, {"embedding": {"vocab": 20, "dim": 4}, "from": "question"}],
     "model[1].linear: its output is never used: the node after it reads from: instead, and nothing reads it by "
     "name; give it a name: and read it with from: where it is needed, or remove it"),
    ([{"flatten": None, "from": "image", "name": "f"}, {"embedding": {"vocab": 20, "dim": 4}, "from": "question"},
      {"seq_pool": "mean"}], "model[0].flatten: its output is never used"),
    ([{"embedding": {"vocab": 20, "dim": 4}, "from": "question", "name": "q"},
      {"repeat": 2, "block": [{"from": "q"}, {"linear": 4}]}],
     "model[1].repeat[0]: its output is never used"),
    ([{"flatten": None, "from": "image"}, {"linear": 4}],
     "inputs.question: is declared but no node reads it; read it with from: question, or drop it from inputs:"),
    ([{"linear": 4}], "model[0].linear: the spec has several inputs (image, question); say which this layer reads"),
    ([{"flatten": None, "from": "imgae"}], "model[0].from: nothing is called 'imgae' here. Did you mean 'image'?"),
    ([{"flatten": None, "from": "image", "merge": "add"}], "model[0].merge: joins several from: tensors"),
    ([{"from": ["image", "question"], "merge": "sum"}], "model[0].merge: must be one of concat, add, mean"),
    ([{"flatten": None, "from": "image", "name": "image"}], "model[0].name: 'image' is one of the spec's inputs"),
    ([{"from": "image", "merge": "concat"}], "model[0].merge: joins several from: tensors"),
    ([{"residual": [{"linear": 4}]}], "model[0].residual: adds its input to its branch, and there is none yet"),
    ([{"name": "x"}], "model[0]: name: names the previous node's output, and there is none"),
])
def test_routing_errors_name_the_node(model: list, fragment: str) -> None:
    spec = {**TWO_TOWERS, "model": model}
    with pytest.raises(SpecError) as info:
        archlab.build(spec)
    assert fragment in str(info.value)


def test_merge_of_unequal_reads_names_where_each_came_from() -> None:
    spec = {**TWO_TOWERS, "model": [
        {"flatten": None, "from": "image", "name": "a"},
        {"embedding": {"vocab": 20, "dim": 16}, "from": "question", "name": "b"},
        {"from": ["a", "b"], "merge": "add"}]}
    with pytest.raises(ShapeError, match=r"model\[2\]\.from: merge 'add' needs the tensors it reads of one shape; "
                                         r"got \(64,\) from model\[0\]\.flatten, \(6, 16\) from model\[1\]\.embedding"):
        archlab.build(spec)


def test_a_later_layer_that_cannot_take_a_read_names_where_it_came_from() -> None:
    spec = {**TWO_TOWERS, "model": [{"conv2d": {"out": 4}, "from": "question"}]}
    with pytest.raises(ShapeError, match=r"model\[0\]\.conv2d: .* produced by inputs\.question"):
        archlab.build(spec)


def test_one_input_specs_can_read_the_input_again_and_named_nodes() -> None:
    """A dense skip: concat the input with a later feature, `from: [input, h]`."""
    spec = {"input": {"shape": [5]}, "model": [
        {"linear": 7}, {"relu": None, "name": "h"}, {"from": ["input", "h"]}, {"linear": 2}]}
    net = archlab.build(spec)
    x = torch.randn(3, 5)
    m = net.model
    torch.testing.assert_close(net(x), m[3](torch.cat([x, m[1](m[0](x))], dim=1)))
    assert archlab.inspect(spec).params == 5 * 7 + 7 + 12 * 2 + 2


def test_parallel_keeps_its_own_merge_and_may_read_names() -> None:
    spec = {**TWO_TOWERS, "model": [
        {"parallel": [[{"flatten": None, "from": "image"}, {"linear": 8}],
                      [{"embedding": {"vocab": 20, "dim": 8}, "from": "question"}, {"seq_pool": "mean"}]],
         "merge": "add"},
        {"linear": 3}]}
    net = archlab.build(spec)
    assert net(batch()).shape == (4, 3)


def test_cross_attention_to_a_named_sequence() -> None:
    """Text queries attend to image patches: `memory: patches` on a cross_attention layer."""
    spec = {
        "inputs": {"image": {"shape": [3, 8, 8]}, "text": {"shape": [5], "dtype": "long", "vocab": 30}},
        "model": [
            {"conv2d": {"out": 16, "kernel": 4, "stride": 4}, "from": "image"},  # (16, 2, 2)
            {"reshape": {"shape": [16, -1]}},
            {"permute": {"dims": [1, 0], "layout": "sequence"}, "name": "patches"},  # 4 patches of 16
            {"embedding": {"vocab": 30, "dim": 16}, "from": "text"},
            {"cross_attention": {"heads": 2, "memory": "patches"}},
            {"seq_pool": "mean"},
            {"linear": 2},
        ]}
    net = archlab.build(spec)
    x = Inputs(image=torch.randn(3, 3, 8, 8), text=torch.randint(0, 30, (3, 5)))
    net(x).sum().backward()
    assert net.model[0].weight.grad.abs().sum() > 0  # the image tower learns through the attention
    assert all(m.memory is None for m in net.modules() if hasattr(m, "memory"))  # cleared after the forward
    r = archlab.inspect(spec)
    assert r.params == sum(p.numel() for p in net.parameters())
    # memory: may also stand beside the layer, as from: and name: do: the same network, the same keys
    beside = {**spec, "model": [*spec["model"][:4], {"cross_attention": {"heads": 2}, "memory": "patches"},
                                *spec["model"][5:]]}
    assert list(archlab.build(beside).state_dict()) == list(net.state_dict())
    flat = {**spec, "model": [{"flatten": None, "from": "image", "name": "v"}, *spec["model"][3:4],
                              {"cross_attention": {"heads": 2}, "memory": "v"}, *spec["model"][5:]]}
    with pytest.raises(SpecError, match=r"cross_attention attends to a sequence \(S, D\), and its memory is "
                                        r"\(192,\) from model\[0\]\.flatten"):
        archlab.build(flat)
    with pytest.raises(SpecError, match=r"model\[4\]\.cross_attention\.memory: expected the name of an input"):
        archlab.build({**spec, "model": [*spec["model"][:4], {"cross_attention": {"heads": 2, "memory": "nope"}}]})
    with pytest.raises(SpecError, match=r"model\[4\]\.linear: unknown argument .memory."):
        archlab.build({**spec, "model": [*spec["model"][:4], {"linear": {"out": 2, "memory": "patches"}}]})


def test_inspect_counts_two_towers_like_torch() -> None:
    r = archlab.inspect(TWO_TOWERS)
    net = archlab.build(TWO_TOWERS)
    assert r.params == sum(p.numel() for p in net.parameters())
    with FlopCounterMode(display=False) as counter:
        net.eval()(batch(1))
    assert r.macs_per_sample * 2 == counter.get_total_flops()
    assert [row.path for row in r.layers][:2] == ["model[0].flatten", "model[1].linear"]


def test_checkpointed_copies_read_names_again_in_backward() -> None:
    """A repeat copy that reads a named tensor recomputes in backward, after the forward has
    cleared its scope: the gradients equal those without checkpointing."""
    spec = {"inputs": {"question": TWO_TOWERS["inputs"]["question"]}, "model": [
        {"embedding": {"vocab": 20, "dim": 8}, "from": "question", "name": "q"},
        {"repeat": 2, "block": [{"linear": 8}, {"relu": None, "name": "r"}, {"from": ["q", "r"], "merge": "add"}]},
        {"seq_pool": "mean"}, {"linear": 2}]}
    plain, ckpt = archlab.build(spec), archlab.build(spec)
    assert checkpoint_repeats(ckpt) == 2
    x = batch()["question"]
    plain(x).sum().backward()
    ckpt(x).sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


SIAMESE = {
    "inputs": {"left": {"shape": [1, 8, 8]}, "right": {"shape": [1, 8, 8]}},
    "blocks": {"tower": [{"conv2d": {"out": 8, "kernel": 3, "padding": "same"}}, "relu", "global_avgpool",
                         {"linear": 16}]},
    "model": [{"tower": None, "from": "left", "name": "a"},
              {"share": "a", "from": "right", "name": "b"},
              {"from": ["a", "b"], "merge": "concat"}, {"linear": 1}],
}


def test_share_applies_one_tower_to_two_inputs_with_one_set_of_weights() -> None:
    net = archlab.build(SIAMESE)
    tower = net.model[0]
    x = Inputs(left=torch.randn(3, 1, 8, 8), right=torch.randn(3, 1, 8, 8))
    want = net.model[3](torch.cat([tower(x["left"]), tower(x["right"])], dim=1))
    torch.testing.assert_close(net(x), want)
    assert sum(p.numel() for p in net.parameters()) == (8 * 9 + 8) + (8 * 16 + 16) + (32 + 1)
    assert not any(k.startswith("model.1.") for k in net.state_dict())  # the weights live once, under model.0
    archlab.build(SIAMESE, seed=1).load_state_dict(net.state_dict())  # and load back by the same keys
    # both uses train the one tower: its gradient is the sum of the two
    net(x).sum().backward()
    both = tower[0].weight.grad.clone()
    net.zero_grad()
    net.model[3](torch.cat([tower(x["left"]), tower(x["right"]).detach()], dim=1)).sum().backward()
    assert not torch.allclose(tower[0].weight.grad, both)
    r = archlab.inspect(SIAMESE)
    with FlopCounterMode(display=False) as counter:
        net.eval()(Inputs(left=x["left"][:1], right=x["right"][:1]))
    assert r.params == 257 and r.macs_per_sample * 2 == counter.get_total_flops()
    twin = copy.deepcopy(net)
    assert twin.model[1].target is twin.model[0]


@pytest.mark.parametrize("change, fragment", [
    ({"inputs": {"left": {"shape": [1, 8, 8]}, "right": {"shape": [1, 6, 6]}}},
     "model[1].share: 'a' was built for (1, 8, 8) (from inputs.left) and cannot take (1, 6, 6) from inputs.right"),
    ({"model": [{"tower": None, "from": "left"}, {"share": "a", "from": "right"}]},
     "model[1].share: expected the name of an earlier node with layers"),
    ({"model": [{"tower": None, "from": "left", "name": "a"}, {"share": "a", "linear": 3, "from": "right"}]},
     "model[1]: share: applies the layers of an earlier node again, with its weights; give no layer beside it"),
])
def test_share_errors(change: dict, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        archlab.build({**SIAMESE, **change})
    assert fragment in str(info.value)


def test_a_deep_copy_routes_through_its_own_scope() -> None:
    net = archlab.build(TWO_TOWERS)
    twin = copy.deepcopy(net)
    assert twin.scope is not net.scope
    torch.testing.assert_close(twin(batch()), net(batch()))


def test_other_network_kinds_refuse_routes() -> None:
    spec = {"input": {"shape": [6], "dtype": "long"}, "vars": {"vocab_size": 20, "target_len": 4},
            "encoder": [{"embedding": {"vocab": 20, "dim": 8}, "name": "e"}],
            "decoder": [{"embedding": {"vocab": 20, "dim": 8}}, {"linear": 20}]}
    with pytest.raises(SpecError, match=r"encoder\[0\]: from: and name: route named tensors in a spec's model: section"):
        archlab.build(spec)


def test_tools_for_one_input_say_so() -> None:
    net = archlab.build(TWO_TOWERS)
    with pytest.raises(SpecError, match=r"prune: the model reads 2 named inputs \(image, question\)"):
        require_one_input(net, "prune")
    from archlab.compress import prune, quantize

    with pytest.raises(SpecError, match="prune: the model reads 2 named inputs"):
        prune(net, 0.5)
    with pytest.raises(SpecError, match="quantize: the model reads 2 named inputs"):
        quantize(net)
    routed = archlab.build({"input": [5], "model": [{"linear": 4, "name": "h"}, {"from": ["input", "h"]}]})
    with pytest.raises(SpecError, match="prune: the spec routes named tensors"):
        prune(routed, 0.5)


# ------------------------------------------------------------------ data and training


def _toy_split(n: int, g: torch.Generator) -> Split:
    """The class is whether the question's first token is above 4 XOR the image is bright."""
    image = torch.randn(n, 1, 8, 8, generator=g)
    question = torch.randint(0, 10, (n, 6), generator=g)
    y = (question[:, 0] > 4).long() ^ (image.mean(dim=(1, 2, 3)) > 0).long()
    return Split(Inputs(image=image, question=question), y)


@register_dataset("test-two-inputs")
def _two_inputs(arg, *, seed, root, target, val_fraction):  # noqa: ANN001, ARG001
    g = torch.Generator().manual_seed(0)
    info = DataInfo("test-two-inputs", (1, 8, 8), "float", "classify", 2, ("no", "yes"),
                    inputs={"image": {"shape": [1, 8, 8], "dtype": "float"},
                            "question": {"shape": [6], "dtype": "long", "vocab": 10}})
    return Dataset(info, _toy_split(256, g), _toy_split(64, g), _toy_split(64, g))


def test_fit_trains_and_stores_a_two_input_model(tmp_path) -> None:
    from archlab.train import fit

    spec = {**TWO_TOWERS, "model": [*TWO_TOWERS["model"][:2],
                                    {"embedding": {"vocab": 10, "dim": 16}, "from": "question"},
                                    *TWO_TOWERS["model"][3:5], {"linear": "$num_classes"}],
            "train": {"epochs": 2}}
    run = fit(spec, data="test-two-inputs", store=tmp_path, quiet=True)
    assert run.status == "finished" and 0 <= run.test_metrics["acc"] <= 1
    assert run.spec.inputs["question"].shape == (6,)
    # a spec that reads only one of the data's inputs trains on it
    image_only = {"inputs": {"image": {"shape": [1, 8, 8]}},
                  "model": [{"flatten": None, "from": "image"}, {"linear": "$num_classes"}], "train": {"epochs": 1}}
    assert fit(image_only, data="test-two-inputs", store=tmp_path, quiet=True).status == "finished"
    with pytest.raises(SpecError, match="inputs.tokens: the data has no input of that name. Its inputs: image, question"):
        fit({**image_only, "inputs": {"tokens": {"shape": [6], "dtype": "long"}}},
            data="test-two-inputs", store=tmp_path, quiet=True)
    with pytest.raises(SpecError, match="input: the data has 2 inputs"):
        fit({"model": [{"flatten": None}, {"linear": "$num_classes"}]}, data="test-two-inputs",
            store=tmp_path, quiet=True)


def test_a_table_with_text_trains_predicts_and_ships_as_two_inputs(tmp_path) -> None:
    """csv with numeric and text columns -> inputs features + review -> a run -> predict on new
    rows and a model folder that loads and gives the run's predictions."""
    import csv
    import random

    from archlab.deploy import export_folder, load, predict
    from archlab.runs import open_store
    from archlab.train import fit

    rng = random.Random(0)
    good, bad = "great fine lovely superb nice".split(), "awful poor dull bad weak".split()
    rows = []
    for _ in range(240):
        y = rng.randint(0, 1)
        words = " ".join(rng.choice(good if y else bad) for _ in range(4))
        rows.append([f"{rng.gauss(y, 1):.3f}", f"{rng.gauss(0, 1):.3f}", words, "yes" if y else "no"])
    with (tmp_path / "t.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["a", "b", "review", "label"], *rows])
    with (tmp_path / "new.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["a", "b", "review"], ["0.1", "0.0", "great nice fine"], ["0.0", "0.2", "awful dull"]])
    spec = {"inputs": {"features": {"shape": [2]}, "review": {"shape": [6], "dtype": "long"}},
            "model": [{"linear": 8, "from": "features", "name": "f"},
                      {"embedding": {"vocab": "$vocab_size", "dim": 8}, "from": "review"},
                      {"seq_pool": "mean", "name": "t"}, {"from": ["f", "t"]}, "relu", {"linear": "$num_classes"}],
            "vars": {"vocab_size": 50}, "train": {"epochs": 8, "lr": 0.02}}
    uri = f"csv:{tmp_path / 't.csv'}?text=review&max_len=6"
    run = fit(spec, data=uri, store=tmp_path / "store", quiet=True)
    assert run.test_metrics["acc"] > 0.8  # the words alone separate the classes
    store = open_store(tmp_path / "store")
    got = predict(run.run_id, tmp_path / "new.csv", store=store)
    assert [r[1] for r in got.rows] == ["yes", "no"]
    folder = export_folder(run.run_id, tmp_path / "shipped", store=store)
    net = load(folder.path)
    assert net.input_names == ("features", "review")
    assert predict(folder.path, tmp_path / "new.csv").rows == got.rows
    assert "review (6,) long" in (tmp_path / "shipped" / "README.md").read_text()


def test_one_network_serves_several_threads_at_once() -> None:
    """The named tensors of a forward are per thread: concurrent calls do not mix them."""
    import threading

    net = archlab.build(TWO_TOWERS).eval()
    xs = [batch(4), Inputs(image=torch.randn(4, 1, 8, 8), question=torch.randint(0, 20, (4, 6)))]
    with torch.no_grad():
        want = [net(x) for x in xs]
    wrong: list[int] = []

    def work(i: int) -> None:
        for _ in range(200):
            with torch.no_grad():
                if not torch.equal(net(xs[i]), want[i]):
                    wrong.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    import pickle

    twin = pickle.loads(pickle.dumps(net))
    torch.testing.assert_close(twin(xs[0]), want[0])


def test_compress_refuses_several_inputs_and_routes_before_writing_anything(tmp_path) -> None:
    from archlab.compress import compress, quantize
    from archlab.runs import open_store
    from archlab.train import fit

    two = {"inputs": {"image": {"shape": [1, 8, 8]}, "question": {"shape": [6], "dtype": "long"}},
           "model": [{"flatten": None, "from": "image", "name": "f"},
                     {"embedding": {"vocab": 10, "dim": 4}, "from": "question"}, {"seq_pool": "mean", "name": "q"},
                     {"from": ["f", "q"]}, {"linear": "$num_classes"}],
           "train": {"epochs": 1}}
    run = fit(two, data="test-two-inputs", store=tmp_path, quiet=True)
    store = open_store(tmp_path)
    before = len(store.list_runs())
    with pytest.raises(SpecError, match="compress: the model reads 2 named inputs"):
        compress(run.run_id, quantize_mode="int8", store=store, quiet=True)
    skip = fit({"model": [{"flatten": None, "name": "x"}, {"linear": 16, "name": "h"}, {"from": ["x", "h"]},
                          {"linear": "$num_classes"}],
                "train": {"epochs": 1}}, data="digits", store=tmp_path, quiet=True)
    before += 1
    with pytest.raises(SpecError, match="compress: run r[0-9a-f]{8}'s spec routes named tensors"):
        compress(skip.run_id, quantize_mode="int8", store=store, quiet=True)
    with pytest.raises(SpecError, match="quantize: the spec routes named tensors"):
        quantize(skip.model)
    assert len(store.list_runs()) == before  # nothing was written


def test_an_input_may_say_it_is_a_sequence() -> None:
    """(T, D) floats are channels (C, L) by default; `layout: sequence` makes concat join features."""
    spec = {"inputs": {"audio": {"shape": [4, 16], "layout": "sequence"}, "video": {"shape": [4, 8], "layout": "sequence"}},
            "model": [{"from": ["audio", "video"]}, {"attention": {"heads": 2}}, {"seq_pool": "mean"}, {"linear": 3}]}
    net = archlab.build(spec)
    assert net.model[1].__class__.__name__ == "SelfAttention" and net(net.example_input(2)).shape == (2, 3)
    assert Spec.from_dict(load_spec(spec).to_dict()) == load_spec(spec)
    with pytest.raises(SpecError, match=r"inputs.audio.layout: a float input's layout is one of flat, channels, sequence"):
        load_spec({**spec, "inputs": {"audio": {"shape": [4], "dtype": "long", "layout": "sequence"}}})
    with pytest.raises(SpecError, match=r"inputs.audio.layout: a sequence is \(T, D\)"):
        archlab.build({**spec, "inputs": {**spec["inputs"], "audio": {"shape": [4, 16, 2], "layout": "sequence"}}})


def test_build_takes_a_shape_per_named_input() -> None:
    net = archlab.build(TWO_TOWERS, input_shape={"image": (1, 6, 6), "question": (3,)})
    assert net.input_types["image"].shape == (1, 6, 6) and net.input_types["question"].describe() == "(3,) long"
    with pytest.raises(SpecError, match="inputs.question: the data has no input of that name"):
        archlab.build(TWO_TOWERS, input_shape={"image": (1, 6, 6)})
