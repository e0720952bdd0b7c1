"""Small hostile inputs through the public API, each run in a pool worker (time and memory
limits): YAML attacks, expressions, integers past Python's digit limit, overflows, batch norm
at one value per channel, malicious CIFAR-10 pickles, bad labels and numbers in npy/csv data.

Every attack passes when it ends in one of archlab's own errors (or, where marked, when it
succeeds), within the time limit, without MemoryError and without running code: attacks
that would run code write a marker file, and its existence is a failure.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MARKER_NAME = "pwned"

# name -> (group, description, outcomes that pass)
ATTACKS: dict[str, tuple[str, str, tuple[str, ...]]] = {}


def attack(name: str, group: str, description: str, passes: tuple[str, ...] = ("archlab",)):
    def decorator(fn: Callable[[Path], Any]) -> Callable[[Path], Any]:
        ATTACKS[name] = (group, description, passes)
        _FUNCTIONS[name] = fn
        return fn
    return decorator


_FUNCTIONS: dict[str, Callable[[Path], Any]] = {}


def _spec(text: str):
    from archlab.model import inspect
    from archlab.spec import load_spec

    return inspect(load_spec(text))


# ------------------------------------------------------------------ YAML


def alias_bomb(levels: int, fanout: int = 10) -> str:
    lines = ["input: {shape: [4]}", "vars:", "  a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    lines.append("model: [linear: 2]")
    return "\n".join(lines) + "\n"


@attack("alias-bomb-9", "yaml", "nine levels of ten YAML aliases under vars: (about 500 bytes)")
def _alias9(tmp: Path):
    return _spec(alias_bomb(9))


@attack("alias-bomb-7", "yaml", "seven levels of ten YAML aliases under vars:")
def _alias7(tmp: Path):
    return _spec(alias_bomb(7))


@attack("alias-bomb-model", "yaml", "six levels of ten aliases of `relu` as the model list")
def _alias_model(tmp: Path):
    lines = ["input: {shape: [4]}", "blocks:", "  l0: &l0 [relu, relu, relu, relu, relu, relu, relu, relu, relu, relu]"]
    for i in range(1, 6):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    lines.append("model: *l5")
    return _spec("\n".join(lines) + "\n")


PYTHON_TAGS = {
    "python-apply": "!!python/object/apply:os.system ['touch {marker}']",
    "python-new": "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "python-name": "!!python/name:os.system",
    "python-module": "!!python/module:os",
    "python-object": "!!python/object:os._wrap_close {{}}",
    "python-tuple": "!!python/tuple [1, 2]",
}


def _python_tag(key: str) -> Callable[[Path], Any]:
    def run(tmp: Path):
        tag = PYTHON_TAGS[key].format(marker=tmp / MARKER_NAME)
        return _spec(f"input: {{shape: [4]}}\nvars:\n  x: {tag}\nmodel: [linear: 2]\n")
    return run


for _key in PYTHON_TAGS:
    attack(f"yaml-{_key}", "yaml", f"a `{PYTHON_TAGS[_key].split()[0]}` tag in vars:")(_python_tag(_key))


def _big_file(tmp: Path, megabytes: int) -> str:
    path = tmp / f"big-{megabytes}.yaml"
    line = b"  - relu\n"
    with open(path, "wb") as f:
        f.write(b"input: {shape: [16]}\nmodel:\n")
        chunk = line * (2**20 // len(line))
        for _ in range(megabytes):
            f.write(chunk)
    return str(path)


@attack("file-100MB", "yaml", "a 100 MB spec file of `- relu` lines")
def _file100(tmp: Path):
    from archlab.spec import load_spec

    return load_spec(_big_file(tmp, 100))


@attack("file-10MB", "yaml", "a 10 MB spec file of `- relu` lines")
def _file10(tmp: Path):
    from archlab.spec import load_spec

    return load_spec(_big_file(tmp, 10))


# ------------------------------------------------------------------ expressions and integers

EXPRESSIONS = {
    "expr-power-tower": "${9**9**9}",
    "expr-round-1e9": "${round(5, -1000000000)}",
    "expr-round-1e7": "${round(5, -10000000)}",
    "expr-shift": "${1 << 10**9}",
    "expr-mul-chain": "${" + "*".join(["99999999999999999999"] * 400) + "}",
    "expr-dunder": "${(1).__class__}",
    "expr-5000-digits": "${" + "7" * 5000 + "}",
    "expr-hex-5000": "${0x" + "f" * 5000 + "}",
    "expr-int-huge-float": "${int(1e308 * 10)}",
}

for _name, _expr in EXPRESSIONS.items():
    def _make(expr: str) -> Callable[[Path], Any]:
        return lambda tmp: _spec(f'input: {{shape: [4]}}\nmodel: [linear: "{expr}"]\n')
    attack(_name, "expression", f"`linear: {_expr[:40]}{'...' if len(_expr) > 40 else ''}`")(_make(_expr))


@attack("yaml-int-5000-digits", "integers", "a 5,000-digit integer in YAML (`linear: 777...7`)")
def _int5000(tmp: Path):
    return _spec("input: {shape: [4]}\nmodel: [linear: " + "7" * 5000 + "]\n")


@attack("yaml-hex-5000-digits", "integers", "a 5,000-digit hex literal in YAML (`linear: 0xfff...f`)")
def _hex5000(tmp: Path):
    return _spec("input: {shape: [4]}\nmodel: [linear: 0x" + "f" * 5000 + "]\n")


@attack("dict-huge-var", "integers", "a 10**5000 var through the dict API, used in ${w + 1}")
def _dict_huge(tmp: Path):
    return _spec_dict({"input": {"shape": [4]}, "vars": {"w": 10**5000}, "model": [{"linear": "${w + 1}"}]})


@attack("dict-huge-var-expr-error", "integers", "a 10**5000 var in an expression that fails (${w / 0})")
def _dict_huge_err(tmp: Path):
    return _spec_dict({"input": {"shape": [4]}, "vars": {"w": 10**5000}, "model": [{"linear": "${w / 0}"}]})


def _spec_dict(d: dict):
    from archlab.model import inspect

    return inspect(d)


# ------------------------------------------------------------------ sizes and overflows


@attack("conv-input-1e11", "overflow", "input [1, 1e11, 1e11] into conv2d")
def _conv_big(tmp: Path):
    return _spec("input: {shape: [1, 100000000000, 100000000000]}\nmodel: [conv2d: {out: 4, kernel: 3}]\n")


@attack("mlp-ratio-1e30", "overflow", "`encoder_block: {mlp_ratio: 1.0e+30}`")
def _mlp_ratio(tmp: Path):
    return _spec("input: {shape: [8, 16]}\nmodel: [encoder_block: {heads: 2, mlp_ratio: 1.0e+30}]\n")


@attack("linear-1e11", "overflow", "`linear: 100000000000` through inspect (meta device: may succeed)",
        passes=("archlab", "ok"))
def _linear_big(tmp: Path):
    return _spec("input: {shape: [4]}\nmodel: [linear: 100000000000]\n")


@attack("linear-storage-overflow", "overflow", "`linear: 2**62` after a wide input")
def _linear_overflow(tmp: Path):
    return _spec(f"input: {{shape: [{2**40}]}}\nmodel: [linear: {2**40}]\n")


@attack("batchnorm-one-value", "batchnorm", "`[flatten, linear: 64, batchnorm, relu, linear: 10]` through inspect",
        passes=("ok",))
def _bn_flat(tmp: Path):
    return _spec("input: {shape: [1, 8, 8]}\nmodel: [flatten, linear: 64, batchnorm, relu, linear: 10]\n")


@attack("batchnorm-resnet18-32px", "batchnorm", "zoo:resnet18 inspected at input 3x32x32 (1x1 maps before its pool)",
        passes=("ok",))
def _bn_resnet(tmp: Path):
    from archlab.model import inspect

    return inspect("zoo:resnet18", input_shape=(3, 32, 32))


# ------------------------------------------------------------------ large specs in time


@attack("inspect-20000-linear", "large", "inspect a list of 20,000 `linear: 16` layers (one distinct block)",
        passes=("ok", "archlab"))
def _many_linear(tmp: Path):
    return _spec("input: {shape: [16]}\nmodel:\n" + "  - linear: 16\n" * 20000)


@attack("inspect-repeat-20000", "large", "inspect `repeat: 20000` of `linear: 16`", passes=("ok", "archlab"))
def _repeat_linear(tmp: Path):
    return _spec("input: {shape: [16]}\nmodel: [{repeat: 20000, block: [linear: 16]}]\n")


@attack("inspect-lstm-classifier", "large", "inspect zoo:lstm-classifier (sequence 200)", passes=("ok",))
def _lstm(tmp: Path):
    from archlab.model import inspect

    return inspect("zoo:lstm-classifier")


# ------------------------------------------------------------------ CIFAR-10 pickles


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _batch(n: int = 10) -> dict:
    rng = np.random.default_rng(0)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(10)) * (n // 10),
            b"batch_label": b"x", b"filenames": [b"f"] * n}


def _cifar_folder(tmp: Path, poison: Any, where: str = "data_batch_1") -> Path:
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = poison if name == where else _batch()
        (folder / name).write_bytes(pickle.dumps(obj))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}))
    return folder


def _load_cifar(path: Path):
    from archlab.data import load_dataset

    return load_dataset(f"cifar10:{path}")


@attack("cifar-clean", "pickle", "control: clean CIFAR-10 batches load", passes=("ok",))
def _cifar_clean(tmp: Path):
    return _load_cifar(_cifar_folder(tmp, _batch()))


@attack("cifar-reduce-os-system", "pickle", "a CIFAR-10 batch whose __reduce__ calls os.system")
def _cifar_system(tmp: Path):
    return _load_cifar(_cifar_folder(tmp, _System(tmp / MARKER_NAME)))


@attack("cifar-reduce-exec", "pickle", "a CIFAR-10 batch whose __reduce__ calls exec")
def _cifar_exec(tmp: Path):
    return _load_cifar(_cifar_folder(tmp, _Exec(tmp / MARKER_NAME)))


@attack("cifar-nested-reduce", "pickle", "the reduce hidden inside the batch dict's label list")
def _cifar_nested(tmp: Path):
    poison = _batch()
    poison[b"labels"] = [_System(tmp / MARKER_NAME)] * 10
    return _load_cifar(_cifar_folder(tmp, poison, "test_batch"))


@attack("cifar-meta-reduce", "pickle", "batches.meta whose __reduce__ calls os.system")
def _cifar_meta(tmp: Path):
    folder = _cifar_folder(tmp, _batch())
    (folder / "batches.meta").write_bytes(pickle.dumps(_System(tmp / MARKER_NAME)))
    return _load_cifar(folder)


@attack("cifar-targz-reduce", "pickle", "the os.system pickle inside cifar-10-python.tar.gz")
def _cifar_tar(tmp: Path):
    folder = _cifar_folder(tmp / "src", _System(tmp / MARKER_NAME))
    archive = tmp / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    shutil.rmtree(tmp / "src")
    return _load_cifar(archive)


# ------------------------------------------------------------------ npy and csv data


def _npy(tmp: Path, x: np.ndarray, y: np.ndarray) -> Path:
    folder = tmp / "npy"
    folder.mkdir()
    np.save(folder / "train_x.npy", x)
    np.save(folder / "train_y.npy", y)
    return folder


@attack("npy-label-1e9", "data", "npy: one train_y value of 10**9 (memory limit 3 GB over torch)")
def _npy_label(tmp: Path):
    from archlab.data import load_dataset

    y = np.zeros(40, dtype=np.int64)
    y[:20] = 1
    y[7] = 10**9
    return load_dataset(f"npy:{_npy(tmp, np.zeros((40, 4), np.float32), y)}")


@attack("npy-label-negative", "data", "npy: one train_y value of -5")
def _npy_negative(tmp: Path):
    from archlab.data import load_dataset

    y = np.zeros(40, dtype=np.int64)
    y[:20] = 1
    y[3] = -5
    return load_dataset(f"npy:{_npy(tmp, np.zeros((40, 4), np.float32), y)}")


def _csv(tmp: Path, rows: list[str]) -> Path:
    path = tmp / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _regression_rows(n: int, bad: str | None = None, feature: str | None = None) -> list[str]:
    rows = ["a,b,y"]
    for i in range(n):
        y = f"{i * 0.37 + 0.1:.3f}"
        a = f"{i % 7}.5"
        if i == 5 and bad is not None:
            y = bad
        if i == 6 and feature is not None:
            a = feature
        rows.append(f"{a},{(i * 13) % 11}.25,{y}")
    return rows


def _must_not_be_silent(ds) -> None:
    """A loaded data set with a non-finite value anywhere is a silent failure."""
    for split in (ds.train, ds.val, ds.test):
        for t in (split.x, split.y):
            arr = np.asarray(t, dtype=np.float64) if not hasattr(t, "numpy") else t.double().numpy()
            if not np.isfinite(arr).all():
                raise SilentError("loaded without an error, with a non-finite value in the data")


class SilentError(Exception):
    """The attack was accepted although its result is wrong."""


@attack("csv-target-inf", "data", "csv: a regression target of `inf`")
def _csv_inf(tmp: Path):
    from archlab.data import load_dataset

    ds = load_dataset(f"csv:{_csv(tmp, _regression_rows(60, 'inf'))}")
    _must_not_be_silent(ds)
    return ds


@attack("csv-target-1e999", "data", "csv: a regression target of `1e999`")
def _csv_1e999(tmp: Path):
    from archlab.data import load_dataset

    ds = load_dataset(f"csv:{_csv(tmp, _regression_rows(60, '1e999'))}")
    _must_not_be_silent(ds)
    return ds


@attack("csv-feature-nan", "data", "csv: a feature of `nan` (must be refused or said; not a silent train mean)",
        passes=("archlab", "ok"))
def _csv_nan(tmp: Path):
    import warnings

    from archlab.data import load_dataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(f"csv:{_csv(tmp, _regression_rows(60, feature='nan'))}")
    if not caught:
        raise SilentError("a nan feature was accepted without an error or a warning")
    return ds


@attack("csv-mixed-column", "data", "csv: one `abc` in a numeric column (issue 15 item 1)")
def _csv_mixed(tmp: Path):
    from archlab.data import load_dataset

    ds = load_dataset(f"csv:{_csv(tmp, _regression_rows(60, feature='abc'))}")
    if ds.info.input_shape != (2,):
        raise SilentError(f"the column became categorical: {ds.info.input_shape[0]} features instead of 2")
    return ds


def run_attack(task: tuple[str, str]) -> dict:
    """Worker side: run one attack in a fresh temporary folder."""
    from archlab.core import ArchlabError

    name = task[1]
    # The parent may name the folder (and remove it after a hang, which kills this process).
    tmp = Path(task[2]) if len(task) > 2 else Path(tempfile.mkdtemp(prefix=f"stress-{name}-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        try:
            _FUNCTIONS[name](tmp)
            outcome, error = "ok", ""
        except ArchlabError as exc:
            first = (str(exc).splitlines() or [""])[0]
            outcome, error = "archlab", f"{type(exc).__name__}: {first}"[:300]
        except MemoryError:
            outcome, error = "memory", "MemoryError"
        except SilentError as exc:
            outcome, error = "silent", str(exc)
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).splitlines() or [""])[0]
            outcome, error = "foreign", f"{type(exc).__name__}: {first}"[:300]
        if (tmp / MARKER_NAME).exists():
            outcome, error = "code-ran", f"the marker file was written ({error or 'no error'})"
        return {"outcome": outcome, "error": error, "passed": outcome in ATTACKS[name][2]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
