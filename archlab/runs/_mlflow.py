"""Copy runs into an MLflow tracking store, so they open in the MLflow UI:

    archlab runs export --mlflow sqlite:///mlflow.db      # every run; or name run ids
    mlflow ui --backend-store-uri sqlite:///mlflow.db     # the UI: the full `mlflow` package

One MLflow run per archlab run, in one experiment (default ``archlab``), tagged
``archlab.run_id``. Exporting again finds that run by its tag and brings it up to date
(status, new epochs, test metrics), so nothing is duplicated. What goes where:

- params: the training settings (``lr``, ``epochs``, ...), the spec's vars as
  ``var.<name>``, the parameter count as ``num_params``, the data as ``data``;
- metrics: every per-epoch metric under its run-store name at step = epoch (``val_acc``,
  ``train_loss``, ``lr``, ...), timed by the run's start plus the epoch seconds; the test
  metrics as ``test_<name>`` at the last epoch's step;
- tags: the run's own tags as ``archlab.<key>``, its status and message, the environment as
  ``env.<key>``; the spec (YAML) is the run's description.

Uses the MLflow client (``pip install mlflow-skinny``), imported only here and only when
exporting; no torch. Its SQL stores (``sqlite:///``) need SQLAlchemy and Alembic, which
archlab already has through Optuna.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import StoreError, thaw
from ._base import RunStorage
from ._records import RunRecord

RUN_ID_TAG = "archlab.run_id"
_STATUS = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED",
           "interrupted": "KILLED", "pruned": "KILLED"}
_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")
# MLflow stores +-inf as the largest finite double (and NaN as a flag).
_BIG = 1.7976931348623157e308


@dataclass(frozen=True)
class Exported:
    """What one export did for one run."""

    run_id: str          # archlab's
    mlflow_run_id: str
    created: bool        # False: an MLflow run for it existed and was brought up to date
    metrics_added: int   # metric points written this time (0 on an unchanged re-export)


def _mlflow() -> Any:
    # Copying local records should not phone home: MLflow's usage telemetry is off unless
    # the user turned it on explicitly.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow  # noqa: F401
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise StoreError("exporting to MLflow needs the MLflow client, which is not installed; "
                         "`pip install mlflow-skinny` (or `pip install archlab[mlflow]`)") from None
    return MlflowClient


def _same(a: float, b: float) -> bool:
    """Equal as MLflow stores them (NaN equals NaN, inf is the largest double)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return max(-_BIG, min(_BIG, a)) == max(-_BIG, min(_BIG, b))


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else str(thaw(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _params(record: RunRecord) -> dict[str, str]:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH as limit

    out = {str(k): _text(v, limit) for k, v in record.settings.items()}
    for name, value in (record.spec.get("vars") or {}).items():
        out[f"var.{name}"] = _text(value, limit)
    if record.params is not None:
        out["num_params"] = str(record.params)
    out["data"] = _text(record.data, limit)
    out["model"] = _text(record.name, limit)
    return out


def _tags(record: RunRecord, store: RunStorage) -> dict[str, str]:
    import yaml
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH as limit

    tags = {RUN_ID_TAG: record.run_id, "archlab.status": record.status,
            "archlab.message": _text(record.message, limit),
            "archlab.store": _text(str(getattr(store, "root", "")), limit)}
    for key, value in record.tags.items():
        tags[f"archlab.{key}"] = _text(value, limit)
    for key, value in record.env.items():
        tags[f"env.{key}"] = _text(value, limit)
    spec = yaml.safe_dump(thaw(record.spec), sort_keys=False)
    tags["mlflow.note.content"] = _text(f"archlab run {record.run_id}: {record.name} on {record.data}"
                                        f"\n\n```yaml\n{spec}```", limit)
    return tags


def _metrics(record: RunRecord) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp in ms, step) for every epoch metric and test metric."""
    start = record.created_at
    elapsed, points, last = 0.0, [], 0
    for e in record.history:
        seconds = e.metrics.get("seconds")
        elapsed += seconds if seconds is not None and math.isfinite(seconds) else 0.0
        stamp = int((start + elapsed) * 1000)
        for key, value in e.metrics.items():
            if key != "epoch":
                points.append((key, float(value), stamp, e.epoch))
        last = max(last, e.epoch)
    end = int((start + (record.duration_s or elapsed)) * 1000)
    for key, value in record.test_metrics.items():
        points.append((f"test_{key}", float(value), end, last))
    return points


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def export_mlflow(store: RunStorage, tracking_uri: str, run_ids: Sequence[str] = (), *,
                  experiment: str = "archlab") -> list[Exported]:
    """Copy runs (all of them, or those named by id or unique prefix) into an MLflow store.

    Idempotent: a second export of an unchanged run adds nothing; of a run that went on (a
    resume), adds its new epochs and updates its status and test metrics.

    >>> import tempfile                                                   # doctest: +SKIP
    >>> from archlab.runs import open_store                               # doctest: +SKIP
    >>> export_mlflow(open_store(), f"sqlite:///{tempfile.mkdtemp()}/m.db")  # doctest: +SKIP
    []
    """
    scheme = tracking_uri.partition("://")[0].partition("+")[0] if "://" in tracking_uri else "file"
    if scheme not in _SCHEMES:
        raise StoreError(f"--mlflow {tracking_uri}: not an MLflow tracking URI. Expected one of "
                         f"sqlite:///mlflow.db, postgresql://..., mysql://..., http://host:5000 or a "
                         f"folder. Received: scheme {scheme!r}")
    records = [store.get_run(r) for r in run_ids] if run_ids else store.list_runs()
    client_class = _mlflow()
    from mlflow.exceptions import MlflowException

    quiet = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [log.level for log in quiet]
    for log in quiet:  # the store's first use logs its table creation at INFO
        log.setLevel(logging.WARNING)
    try:
        client = client_class(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        existing = _existing_runs(client, experiment_id)
        done = []
        for record in records:
            mlflow_id, added = _export_one(client, experiment_id, existing.get(record.run_id),
                                           record, store)
            done.append(Exported(record.run_id, mlflow_id, record.run_id not in existing, added))
            existing[record.run_id] = mlflow_id
        return done
    except MlflowException as e:
        raise StoreError(f"--mlflow {tracking_uri}: {e.message}; expected an MLflow tracking URI "
                         f"such as sqlite:///mlflow.db") from None
    finally:
        for log, level in zip(quiet, levels, strict=True):
            log.setLevel(level)


def _export_one(client: Any, experiment_id: str, mlflow_id: str | None, record: RunRecord,
                store: RunStorage) -> tuple[str, int]:
    """Create or bring up to date the MLflow run of one record: (its id, metric points added).
    Only what differs is written, in as few calls as MLflow's batch limits allow (each call
    is a commit of the SQL store)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

    name = record.tags.get("candidate", record.name)
    status = _STATUS.get(record.status, "RUNNING")
    end_time = int(record.updated_at * 1000)
    if mlflow_id is None:
        run = client.create_run(experiment_id, start_time=int(record.created_at * 1000),
                                tags={RUN_ID_TAG: record.run_id}, run_name=name)
        mlflow_id = run.info.run_id
        logged_params: dict[str, str] = {}
        logged_tags: dict[str, str] = {}
        history: dict[str, dict[int, float]] = {}
    else:
        run = client.get_run(mlflow_id)
        logged_params, logged_tags = dict(run.data.params), dict(run.data.tags)
        history = {key: {m.step: m.value for m in client.get_metric_history(mlflow_id, key)}
                   for key in run.data.metrics}
        if run.info.run_name != name:
            client.update_run(mlflow_id, name=name)
        if run.info.status == status and (status == "RUNNING" or run.info.end_time == end_time):
            status = ""  # already as it should be
    # A param keeps its first value in MLflow; a run's settings never change.
    params = [Param(k, v) for k, v in _params(record).items() if k not in logged_params]
    tags = [RunTag(k, v) for k, v in _tags(record, store).items() if logged_tags.get(k) != v]
    metrics = [Metric(key, value, stamp, step) for key, value, stamp, step in _metrics(record)
               if step not in history.get(key, {}) or not _same(history[key][step], value)]
    if len(params) + len(tags) <= MAX_PARAMS_TAGS_PER_BATCH and len(metrics) <= (
            MAX_METRICS_PER_BATCH - len(params) - len(tags)):
        if params or tags or metrics:
            client.log_batch(mlflow_id, metrics=metrics, params=params, tags=tags)
    else:
        for chunk in _batches(params, MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(mlflow_id, params=chunk)
        for chunk in _batches(tags, MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(mlflow_id, tags=chunk)
        for chunk in _batches(metrics, MAX_METRICS_PER_BATCH):
            client.log_batch(mlflow_id, metrics=chunk)
    if status == "RUNNING" and run.info.status != "RUNNING":
        client.update_run(mlflow_id, status=status)
    elif status and status != "RUNNING":
        client.set_terminated(mlflow_id, status, end_time=end_time)
    return mlflow_id, len(metrics)


def _existing_runs(client: Any, experiment_id: str) -> dict[str, str]:
    """archlab run id -> MLflow run id, for the runs an earlier export made."""
    out: dict[str, str] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` != ''",
                                  max_results=1000, page_token=token)
        for run in page:
            out.setdefault(run.data.tags[RUN_ID_TAG], run.info.run_id)
        token = page.token
        if not token:
            return out
