"""MLflow evaluation datasets (``mlflow.genai.datasets``): read one as rows to check, push a
JSONL file's records into one, and record on a run which dataset and version it evaluated.

Evaluation datasets live in MLflow's SQL tables. A file store (``./mlruns``) has none: MLflow
raises FEATURE_DISABLED locally, and a server on a file store answers HTTP 500 to every dataset
call, which MLflow's client retries for minutes; ``use_server`` finds out with one request and
says so in one line. Imported only where a dataset source or lineage needs it.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from jobs.core.errors import UserError
from jobs.store.tracking import MLFLOW_CLIENT_ENV, check_server

RECORD_ID_TAG = "promptgate.record_id"  # a record's id from its JSONL line, kept as a tag of the MLflow record
RECORD_POSITION_TAG = "promptgate.position"  # its place among the file's records: read back in the file's order
DATASET_ID = re.compile(r"d-[0-9a-f]{32}")  # MLflow's evaluation dataset ids (EvaluationDatasetSource)
PUSH_HINT = "`python -m jobs.datasets push <file.jsonl> --name {name}` (make dataset FILE=<file.jsonl> NAME={name})"


@dataclass(frozen=True)
class Found:
    """An evaluation dataset as read: its identity and its rows ({"id", "inputs", "expectations"})."""

    name: str
    dataset_id: str
    digest: str
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Pushed:
    name: str
    dataset_id: str
    records: int  # records the dataset holds after the push
    merged: int  # records added or changed by this push (0: it was up to date)
    created: bool
    digest: str
    link: str  # the dataset in MLflow's UI


def no_sql_backend(shown: str, uri: str, or_file: str) -> UserError:
    return UserError(f"{shown}: MLflow evaluation datasets need a SQL tracking backend, and {uri} keeps its runs in "
                     "files (a file store); run the MLflow server with --backend-store-uri sqlite:///mlflow.db (as "
                     f"`make mlflow-up` does) or a PostgreSQL/MySQL URI{or_file}")


def probe(uri: str, shown: str, timeout_s: float, or_file: str) -> None:
    """One dataset search without retries: a server on a file store answers FEATURE_DISABLED
    (HTTP 500, which MLflow's own client would retry for minutes)."""
    request = urllib.request.Request(uri.rstrip("/") + "/api/3.0/mlflow/datasets/search", method="POST",
                                     data=b'{"max_results": 1}', headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return
    except urllib.error.HTTPError as e:
        try:
            code = json.loads(e.read() or b"{}").get("error_code")
        except ValueError:
            code = None
        if code == "FEATURE_DISABLED":
            raise no_sql_backend(shown, uri, or_file) from None
        if e.code == 404:
            import mlflow

            raise UserError(f"{shown}: the MLflow server {uri} has no evaluation datasets API (HTTP 404); upgrade it "
                            f"to this client's MLflow {mlflow.__version__}") from None
    except (urllib.error.URLError, OSError):
        pass  # check_server has just reached it; MLflow's own call will name a new outage


def use_server(tracking_uri: str | None, timeout_s: float, shown: str, experiment: str | None = None) -> str | None:
    """Point MLflow at the tracking server (``None``: the current one) once it is known to hold
    evaluation datasets; the experiment's id when one is named (created if missing)."""
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    or_file = "" if experiment else ", or give the dataset as a JSONL file"  # a push has no other way
    scheme = urlparse(uri).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a path (./mlruns, C:\...) or file:// is a file store
        raise no_sql_backend(shown, uri, or_file)
    check_server(uri, timeout_s)
    if scheme in ("http", "https"):
        probe(uri, shown, timeout_s, or_file)
    for key, value in MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    mlflow.set_tracking_uri(uri)
    return mlflow.set_experiment(experiment).experiment_id if experiment else None


def find(ref: str, shown: str, missing_ok: bool = False) -> Any | None:
    """The dataset named ``ref``, or with id ``ref`` (d-...); a missing one is bad input naming
    how to create it (None with ``missing_ok``)."""
    from mlflow.exceptions import MlflowException
    from mlflow.genai.datasets import get_dataset, search_datasets

    if not ref:
        raise UserError(f"{shown}: give the dataset's name or id, like mlflow-dataset:support-train or mlflow-dataset:d-...")
    by_id = DATASET_ID.fullmatch(ref) is not None
    try:
        return get_dataset(dataset_id=ref) if by_id else get_dataset(name=ref)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            if missing_ok:
                return None
            how = "check the id in the MLflow UI (Datasets tab)" if by_id else "create it with " + PUSH_HINT.format(name=ref)
            raise UserError(f"{shown}: no MLflow evaluation dataset {'with id' if by_id else 'named'} '{ref}' on "
                            f"{_current_uri()}; {how}") from None
        ids = [] if by_id or e.error_code != "INVALID_PARAMETER_VALUE" else [
            d.dataset_id for d in search_datasets(filter_string=f"name = '{ref}'", max_results=10)]
        if len(ids) > 1:  # what MLflow's INVALID_PARAMETER_VALUE meant: several datasets share the name
            raise UserError(f"{shown}: {len(ids)} MLflow evaluation datasets are named '{ref}'; name one by id, "
                            f"like mlflow-dataset:{ids[0]} (ids: {', '.join(ids)})") from None
        raise


def _current_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def stored(dataset: Any) -> list[tuple[int | None, dict[str, Any]]]:
    """(place in the pushed file or None, row) for each record, in MLflow's order (created time,
    record id); a row's id is the pushed JSONL id, else MLflow's record id."""
    out = []
    for row in dataset.to_df().to_dict("records"):
        tags = row["tags"] or {}
        place = str(tags.get(RECORD_POSITION_TAG, ""))
        out.append((int(place) if place.isdigit() else None, {"id": tags.get(RECORD_ID_TAG) or row["dataset_record_id"],
                                                           "inputs": row["inputs"], "expectations": row["expectations"] or {}}))
    return out


def rows_of(dataset: Any) -> list[dict[str, Any]]:
    """The dataset's rows in the pushed file's order, so a dataset reads as the file it came
    from; records added another way follow, in MLflow's order."""
    return [row for _, row in sorted(stored(dataset), key=lambda s: (s[0] is None, s[0] or 0))]


def read(ref: str, shown: str, tracking_uri: str | None, timeout_s: float) -> Found:
    """The evaluation dataset ``ref`` (a name or an id) on the tracking server, with its rows."""
    use_server(tracking_uri, timeout_s, shown)
    dataset = find(ref, shown)
    return Found(dataset.name, dataset.dataset_id, dataset.digest, rows_of(dataset))


def changed_rows(existing: list[tuple[int | None, dict[str, Any]]], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The wanted records a merge would add or change. MLflow matches records by their inputs
    and merges expectations and tags into a match, so a record is up to date when a match holds
    its id, its place and every one of its expectations; merging only the others keeps a second
    push of the same file from touching the dataset (nor its digest)."""
    by_inputs = {json.dumps(row["inputs"], sort_keys=True): (place, row) for place, row in existing}
    out = []
    for w in wanted:
        place, have = by_inputs.get(json.dumps(w["inputs"], sort_keys=True), (None, None))
        if have is None or have["id"] != w["tags"][RECORD_ID_TAG] or str(place) != w["tags"][RECORD_POSITION_TAG] or any(
                have["expectations"].get(k) != v for k, v in w["expectations"].items()):
            out.append(w)
    return out


def push(name: str, rows: list[dict[str, Any]], tracking_uri: str, experiment: str, timeout_s: float,
         ui_base: str) -> Pushed:
    """Create the evaluation dataset ``name`` in the experiment if missing and merge ``rows``
    (checked records: {"id", "inputs", "expectations"}) into it."""
    from mlflow.genai.datasets import add_dataset_to_experiments, create_dataset, get_dataset

    shown = f"mlflow-dataset:{name}"
    if DATASET_ID.fullmatch(name):
        raise UserError(f"--name {name}: an MLflow dataset id is not a name; give a name like support-train")
    experiment_id = use_server(tracking_uri, timeout_s, shown, experiment)
    dataset = find(name, shown, missing_ok=True)
    created = dataset is None
    if created:
        dataset = create_dataset(name=name, experiment_id=experiment_id)
    elif experiment_id not in (dataset.experiment_ids or []):
        dataset = add_dataset_to_experiments(dataset.dataset_id, [experiment_id])
    wanted = [{"inputs": r["inputs"], "expectations": r["expectations"],
               "tags": {RECORD_ID_TAG: r["id"], RECORD_POSITION_TAG: str(n)}} for n, r in enumerate(rows, 1)]
    merged = changed_rows([] if created else stored(dataset), wanted)
    if merged:
        dataset.merge_records(merged)
    dataset = get_dataset(dataset_id=dataset.dataset_id)  # the digest and records after the merge
    link = f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/datasets/{dataset.dataset_id}"
    return Pushed(name, dataset.dataset_id, len(rows_of(dataset)), len(merged), created, dataset.digest, link)


def log_lineage(run_id: str, origins: Iterable[Any]) -> None:
    """Record on the run the datasets its rows were read from (``jobs.eval.datasets.Origin``:
    uri, name, digest, split, dataset_id), as MLflow's run page lists them under Datasets: an
    evaluation dataset by its id and digest (source type ``mlflow_evaluation_dataset``, as
    ``mlflow.genai.evaluate`` logs one it is given), a file by its path or S3 URI and a digest
    of its text. The split is the input's context tag (``mlflow.data.context``)."""
    from mlflow import MlflowClient
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.evaluation_dataset_source import EvaluationDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for o in sorted(set(origins), key=lambda o: (o.split, o.uri)):
        if o.dataset_id:
            source = EvaluationDatasetSource(o.dataset_id)
        else:
            with warnings.catch_warnings():  # MLflow registers local files' source twice and warns it is ambiguous
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(o.uri)
        dataset = MetaDataset(source, name=o.name, digest=o.digest)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(),  # what mlflow.log_input logs, for a run not active here
                                   tags=[InputTag(MLFLOW_DATASET_CONTEXT, o.split)] if o.split else []))
    if inputs:
        MlflowClient().log_inputs(run_id, datasets=inputs)
