"""explain(run_id): attributions, attention maps and their checks for a stored run.

    expl = explain(run_id, methods="saliency,ig,gradcam", samples=32)
    expl.summary()["ig"]["completeness_max"]        # <= 1e-3
    archlab.compare.write_explanation(expl, "explain.html")

The samples come from the run's test split (one class after another, so every class has
examples); each is explained for the class the model predicts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import ArchlabError, SpecError, thaw
from ..data import load_dataset
from ..model import Network, build, require_one_input
from ..runs import SQLiteRunStorage, open_store
from ..spec import Spec
from ..train import TaskProgress, TrainSettings, load_run_model, task_for
from ._attention import AttentionMap, attention_maps, attention_modules
from ._checks import curve_area, deletion_curves, feature_scores, random_orders, rank_correlation
from ._methods import (
    IG_RULE,
    check_methods,
    gradcam,
    integrated_gradients,
    last_conv,
    parse_methods,
    saliency,
)

# The targets the checks are held to (issue 14); the report marks each pass or fail.
COMPLETENESS_TARGET = 1e-3      # |Σ IG − (f(x) − f(baseline))| for every sample
RANDOMISATION_TARGET = 0.3      # mean Spearman ρ, trained vs weight-randomised
DELETION_TARGET = 0.9           # share of samples where IG deletion beats random deletion
RANDOM_SEED_OFFSET = 10_007     # the randomised copy's initialisation seed: the run's seed + this


@dataclass(frozen=True)
class MethodResult:
    """One attribution method on the explained samples, with its checks.

    attributions      (N, *input_shape), trained model
    randomised        (N, *input_shape), the weight-randomised copy, same targets
    rank_corr         (N,) Spearman ρ between the two (NaN where a map is constant)
    rank_corr_abs     (N,) the same on absolute values (Adebayo et al. report both)
    deletion          (N, K+1) the target's score as the most-attributed features go first
    deletion_auc      (N,) area under it
    completeness      (N,) integrated gradients only: |Σ attributions − (f(x) − f(baseline))|
    steps             (N,) integrated gradients only: the steps each sample needed
    """

    name: str
    attributions: np.ndarray
    randomised: np.ndarray
    rank_corr: np.ndarray
    rank_corr_abs: np.ndarray
    deletion: np.ndarray
    deletion_auc: np.ndarray
    seconds: float
    completeness: np.ndarray | None = None
    steps: np.ndarray | None = None

    @property
    def maps(self) -> np.ndarray:
        """One map per sample for display: summed over channels for images, else as is."""
        a = self.attributions
        return a.sum(1) if a.ndim >= 3 else a


@dataclass(frozen=True)
class Explanation:
    """What `explain` found for one run (arrays are numpy; `summary()` is JSON-able)."""

    run_id: str
    name: str                        # the spec's name
    data: str
    task: str                        # classify | regress | language_model
    input_shape: tuple[int, ...]
    kind: str                        # image | table | tokens | signal
    indices: np.ndarray              # (N,) positions in the test split
    inputs: np.ndarray               # (N, *input_shape)
    labels: np.ndarray               # (N,) true labels (classify), else targets' first value
    preds: np.ndarray                # (N,) predicted class (classify)
    targets: np.ndarray              # (N,) the output index each sample is explained for
    methods: tuple[MethodResult, ...] = ()
    fractions: np.ndarray | None = None        # (K+1,) share of features deleted at each curve point
    random_deletion: np.ndarray | None = None  # (N, K+1) mean over random orders
    random_auc: np.ndarray | None = None       # (N,)
    attention: tuple[AttentionMap, ...] = ()
    attention_error: float | None = None       # max over layers |math − fused output| / max |fused output|
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    baseline: str = "zeros"
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def method_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.methods) + (("attention",) if self.attention else ())

    def method(self, name: str) -> MethodResult:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)

    def class_name(self, k: int) -> str:
        return self.class_names[k] if self.class_names and 0 <= k < len(self.class_names) else str(k)

    def per_class_examples(self) -> list[int]:
        """Row numbers of one explained sample per class (the first of each), in class order."""
        first: dict[int, int] = {}
        for i, y in enumerate(self.labels.tolist()):
            first.setdefault(int(y), i)
        return [first[k] for k in sorted(first)]

    def summary(self) -> dict[str, Any]:
        """The checks as plain numbers, per method (and attention), with the targets they meet."""
        out: dict[str, Any] = {"run_id": self.run_id, "samples": int(len(self.indices)), "seconds": self.seconds,
                               "settings": dict(self.settings)}
        for m in self.methods:
            rho = m.rank_corr[~np.isnan(m.rank_corr)]
            rho_abs = m.rank_corr_abs[~np.isnan(m.rank_corr_abs)]
            d: dict[str, Any] = {
                "rank_corr_mean": float(rho.mean()) if len(rho) else None,
                "rank_corr_max": float(rho.max()) if len(rho) else None,
                "rank_corr_abs_mean": float(rho_abs.mean()) if len(rho_abs) else None,
                "rank_corr_undefined": int(np.isnan(m.rank_corr).sum()),
                "randomisation_pass": bool(len(rho)) and float(rho.mean()) <= RANDOMISATION_TARGET,
                "seconds": m.seconds,
            }
            if self.random_auc is not None:
                wins = m.deletion_auc < self.random_auc
                d.update(deletion_auc_mean=float(m.deletion_auc.mean()),
                         random_auc_mean=float(self.random_auc.mean()),
                         deletion_wins=float(wins.mean()),
                         deletion_pass=float(wins.mean()) >= DELETION_TARGET)
            if m.completeness is not None:
                d.update(completeness_max=float(m.completeness.max()), completeness_mean=float(m.completeness.mean()),
                         completeness_pass=bool(m.completeness.max() <= COMPLETENESS_TARGET),
                         steps_max=int(m.steps.max()), steps_mean=float(m.steps.mean()))
            out[m.name] = d
        if self.attention:
            out["attention"] = {"relative_output_difference": self.attention_error,
                                "layers": {a.layer: {"entropy": [float(e) for e in a.entropy],
                                                     "uniform": a.uniform, "max_output_difference": a.difference,
                                                     "relative_output_difference": a.relative}
                                           for a in self.attention}}
        return out


def _select(y: torch.Tensor, n: int, classify: bool) -> torch.Tensor:
    """n test positions: for a classifier one class after another (the first unused sample of
    each class in turn), so every class has examples; otherwise the first n."""
    if not classify:
        return torch.arange(min(n, len(y)))
    queues = {int(k): (y == k).nonzero().flatten().tolist() for k in torch.unique(y)}
    picked: list[int] = []
    while len(picked) < min(n, len(y)):
        for k in sorted(queues):
            if queues[k] and len(picked) < n:
                picked.append(queues[k].pop(0))
    return torch.tensor(sorted(picked))


def _kind(net: Network) -> str:
    t = net.input_type
    if t.dtype == "long":
        return "tokens"
    if t.rank == 1:
        return "table"
    return "image" if t.rank == 3 else "signal"


def explain(run_id: str, methods: str | list[str] | tuple[str, ...] | None = None, samples: int = 32, *,
            store: SQLiteRunStorage | str | Path | None = None, seed: int = 0,
            ig_tolerance: float = COMPLETENESS_TARGET, ig_max_steps: int = 4096, randomisation: bool = True,
            deletion: bool = True, data_root: str | Path | None = None, quiet: bool = True) -> Explanation:
    """Explain a stored run's predictions on `samples` test samples; see the module docstring.

    methods: saliency, ig, gradcam, attention (a list or 'a,b'); None: every one the model allows.

    >>> expl = explain(run_id, methods="ig", samples=8)              # doctest: +SKIP
    >>> expl.method("ig").completeness.max() <= 1e-3                # doctest: +SKIP
    True
    """
    started = time.perf_counter()
    wanted = parse_methods(methods)
    if not 1 <= samples <= 10_000:
        raise ArchlabError(f"--samples: expected between 1 and 10000. Received: {samples}")
    if not ig_tolerance > 0:
        raise ArchlabError(f"--ig-tolerance: expected a positive number. Received: {ig_tolerance}")
    st = store if isinstance(store, SQLiteRunStorage) else open_store(store)
    net, record = load_run_model(run_id, store=st)
    where = f"run {record.run_id}"
    if not isinstance(net, Network):
        raise SpecError(f"explain {where}: a {net.kind} network; explanations are for plain networks "
                        f"(a model: section) that classify or regress")
    require_one_input(net, f"explain {where}")
    spec = Spec.from_dict(thaw(record.spec))
    settings = TrainSettings.from_mapping(thaw(record.settings))
    uri = record.data
    name, sep, _ = uri.partition(":")
    is_csv = name == "csv" or (not sep and uri.lower().endswith(".csv"))
    dataset = load_dataset(uri, seed=settings.seed, root=data_root, target=settings.target if is_csv else None)
    task = task_for(spec, settings, dataset.info)
    if task.name not in ("classify", "regress", "language_model"):
        raise SpecError(f"explain {where}: task {task.name}; explanations are for runs that classify, regress "
                        f"or model language (attention only)")
    kind = _kind(net)
    conv = last_conv(net, net.layers)
    attn = attention_modules(net, net.layers)
    chosen = check_methods(wanted, float_input=kind != "tokens", conv=conv, attention_found=bool(attn),
                           kinds=[leaf.kind for leaf in net.layers], input_rank=net.input_type.rank, where=where)
    if task.name == "language_model" and any(m != "attention" for m in chosen):
        raise SpecError(f"explain {where}: a language model; only --methods attention applies")

    net.eval()
    test = dataset.test
    classify = task.name == "classify"
    rows = _select(test.y, samples, classify)
    x = test.x[rows]
    y = test.y[rows]
    with torch.no_grad():
        out = net(x)
    preds = out.argmax(-1) if classify else torch.zeros(len(x), dtype=torch.long)
    targets = preds if classify else torch.zeros(len(x), dtype=torch.long)
    baseline = torch.zeros_like(x)
    image_like = kind in ("image", "signal")
    attributions = [m for m in chosen if m != "attention"]

    results: list[MethodResult] = []
    randomised = None
    if attributions and randomisation:
        randomised = build(net.spec, seed=settings.seed + RANDOM_SEED_OFFSET).eval()
        conv_r = last_conv(randomised, randomised.layers)
    steps_total = len(attributions) + (1 if "attention" in chosen else 0) + (1 if attributions and deletion else 0)
    fractions = random_curve = random_auc = None
    attention: list[AttentionMap] = []
    attention_error = None
    with TaskProgress(steps_total, "explaining", quiet=quiet) as progress:
        for m in attributions:
            t0 = time.perf_counter()
            completeness = steps = None

            def attribute(model: torch.nn.Module, layer: torch.nn.Module | None, method: str = m) -> tuple:
                if method == "saliency":
                    return saliency(model, x, targets), None
                if method == "gradcam":
                    return gradcam(model, layer, x, targets), None
                r = integrated_gradients(model, x, targets, baseline, ig_tolerance, ig_max_steps)
                return r.attributions, r

            a, ig = attribute(net, conv[1] if conv else None)
            if ig is not None:
                completeness, steps = ig.error, ig.steps
            if randomised is not None:
                ar, _ = attribute(randomised, conv_r[1] if conv_r else None)
                ar = ar.numpy()
                rho, rho_abs = rank_correlation(a.numpy(), ar), rank_correlation(np.abs(a.numpy()), np.abs(ar))
            else:
                ar = np.zeros_like(a.numpy())
                rho = rho_abs = np.full(len(x), np.nan)
            curve = auc = np.zeros((len(x), 0))
            if deletion:
                order = torch.sort(feature_scores(a, image_like), dim=1, descending=True, stable=True).indices
                fractions, curve = deletion_curves(net, x, targets, order, baseline, image_like, classify)
                auc = curve_area(fractions, curve)
            results.append(MethodResult(m, a.numpy(), ar, rho, rho_abs, curve, auc, time.perf_counter() - t0,
                                        completeness, steps))
            progress.advance(_line(results[-1]))
        if attributions and deletion:
            n_features = feature_scores(x, image_like).shape[1]
            curves = [deletion_curves(net, x, targets, order, baseline, image_like, classify)[1]
                      for order in random_orders(len(x), n_features, seed)]
            random_curve = np.mean(curves, axis=0)
            random_auc = np.mean([curve_area(fractions, c) for c in curves], axis=0)
            progress.advance("random deletion orders")
        if "attention" in chosen:
            maps, attention_error = attention_maps(net, net.layers, x)
            attention = maps
            progress.advance(f"attention maps: {len(maps)} layers, each matches its fused kernel "
                             f"within {attention_error:.1e} of its output's scale")
    info = dataset.info
    return Explanation(
        run_id=record.run_id, name=spec.name or "model", data=record.data, task=task.name,
        input_shape=tuple(net.input_shape), kind=kind, indices=rows.numpy(), inputs=x.numpy(),
        labels=(y if classify else torch.zeros(len(x), dtype=torch.long)).numpy(), preds=preds.numpy(),
        targets=targets.numpy(), methods=tuple(results), fractions=fractions,
        random_deletion=random_curve, random_auc=random_auc, attention=tuple(attention),
        attention_error=attention_error, class_names=info.class_names, feature_names=info.feature_names,
        baseline="zeros (a black image; the train mean of a standardised table)",
        settings={"ig_rule": IG_RULE, "ig_tolerance": ig_tolerance, "ig_max_steps": ig_max_steps,
                  "randomised_seed": settings.seed + RANDOM_SEED_OFFSET, "random_orders": 8, "seed": seed},
        seconds=time.perf_counter() - started)


def _line(m: MethodResult) -> str:
    text = f"{m.name} ({m.seconds:.1f}s)"
    if m.completeness is not None:
        text += f": completeness error max {m.completeness.max():.1e}, steps up to {int(m.steps.max())}"
    return text
