"""``python -m jobs.datasets push <file.jsonl> --name <name> [overrides]``: create or update an
MLflow evaluation dataset from a JSONL file (``make dataset``), for ``dataset.<split>=mlflow-dataset:<name>``.

The file goes through the checks every stage makes (the overrides pick the experiment whose
``dataset.input_keys``, ``required_expectations`` and ``limits`` apply); the dataset is created
in the configured MLflow experiment if missing, and the records are merged by their inputs, so
pushing the same file twice leaves the same records (and digest). A push adds and updates
records; it never deletes one.
"""

from __future__ import annotations

import argparse
import sys

from jobs.config.compose import compose
from jobs.core.errors import UserError, exit_code, one_line
from jobs.eval import datasets


def push(path: str, name: str, overrides: list[str]) -> str:
    """Push the checked records of ``path``; the lines to print."""
    from jobs.store import datasets as store_datasets

    cfg = compose(overrides)
    try:
        records = datasets.load(path, list(cfg.dataset.input_keys), list(cfg.dataset.required_expectations), cfg.limits)
    except UserError as e:  # the keys come from the experiment: say which, the commonest cause
        raise UserError(f"{e} (checked against the dataset keys of experiment={cfg.experiment_name}; pass "
                        "experiment=<name> for another)") from None
    rows = [{"id": r.id, "inputs": r.inputs, "expectations": r.expectations} for r in records]
    m = cfg.mlflow
    done = store_datasets.push(name, rows, str(m.tracking_uri), str(m.experiment), float(m.connect_timeout_s),
                               str(m.get("ui_url") or m.tracking_uri))
    what = "created" if done.created else "updated" if done.merged else "up to date"
    return "\n".join([
        f"{datasets.MLFLOW_DATASET}{done.name} {what}: {done.merged} of the file's {len(rows)} records added or changed",
        f"  id: {done.dataset_id}",
        f"  records: {done.records}",
        f"  digest: {done.digest}",
        f"  MLflow UI: {done.link}",
        f"use it with dataset.train={datasets.MLFLOW_DATASET}{done.name} (or dataset.heldout, dataset.traffic)",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.datasets", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("push", help="create or update an MLflow evaluation dataset from a JSONL file")
    up.add_argument("file", help="the JSONL file (local path or s3:// URI)")
    up.add_argument("--name", required=True, help="the evaluation dataset's name, e.g. support-train")
    up.add_argument("overrides", nargs="*", help="config overrides, e.g. experiment=<name>")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)  # overrides may follow --name
    if unknown := [a for a in rest if a.startswith("-")]:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        print(push(args.file, args.name, [*args.overrides, *rest]))
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return exit_code(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
