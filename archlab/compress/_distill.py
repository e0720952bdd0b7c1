"""Knowledge distillation: train a smaller student spec from a stored teacher run.

    run = distill(teacher_run_id, "student.yaml", temperature=4, alpha=0.9, epochs=20)

A distillation is a run of the one training loop (`archlab.train.fit`) whose settings name
the teacher (`archlab.train._distill_task` owns the step and the loss: alpha * KD +
(1 - alpha) * CE, alpha weighing the teacher's side). The student trains on the teacher's
data (and its csv target column) unless told otherwise; its other settings are the student
spec's own `train:` section under explicit overrides, as for any run. The run records the
teacher's id (setting `teacher` and tag `teacher`), T (`kd_temperature`) and alpha
(`kd_alpha`); it resumes like any run (`archlab train --resume`), reloading the teacher from
the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core import SpecError, StoreError, thaw
from ..runs import SQLiteRunStorage, open_store
from ..spec import Spec
from ..train import Run, fit


def distill(teacher: str, student: Spec | str | Mapping[str, Any], *, data: str | None = None,
            temperature: float | None = None, alpha: float | None = None,
            store: SQLiteRunStorage | str | Path | None = None, quiet: bool = False,
            **settings: Any) -> Run:
    """Train `student` (a spec, YAML file or zoo:NAME) with Hinton's distillation loss from the
    finished run `teacher` (an id or unique prefix); returns the student's run.

    `temperature` (T, default 4) softens both sides' logits; `alpha` (default 0.9) is the
    weight of the KD term, 1 - alpha that of the student's own task loss. `settings` are
    `fit`'s (epochs, lr, batch_size, seed, tags, on_start, ...).

    >>> run = distill(teacher_id, {"name": "s", "input": {"shape": [1, 8, 8]},     # doctest: +SKIP
    ...               "model": ["flatten", {"linear": 16}, "relu", {"linear": "$num_classes"}]}, epochs=5)
    >>> run.settings.teacher == open_store().get_run(teacher_id).run_id              # doctest: +SKIP
    True
    """
    check_kd(temperature, alpha)
    st = store if isinstance(store, SQLiteRunStorage) else open_store(store)
    try:
        record = st.get_run(teacher)
    except StoreError as e:
        raise StoreError(f"teacher {teacher}: {e}") from None
    if data is None:  # the teacher's data, read as it was (its csv target column too)
        data = record.data
        if settings.get("target") is None:
            settings["target"] = thaw(record.settings).get("target")
    return fit(student, data, store=st, quiet=quiet, teacher=record.run_id, kd_temperature=temperature,
               kd_alpha=alpha, **settings)


def check_kd(temperature: float | None, alpha: float | None) -> None:
    """SpecError, naming the flag, for a temperature or alpha distillation cannot use."""
    if alpha is not None and not 0 <= alpha <= 1:
        raise SpecError(f"--alpha: expected a weight in [0, 1] (that of the KD term; 1 - alpha weighs the task "
                        f"loss). Received: {alpha}")
    if temperature is not None and not temperature > 0:
        raise SpecError(f"--temperature: expected a number > 0 (1 leaves the logits as they are; Hinton's "
                        f"default is 4). Received: {temperature}")
