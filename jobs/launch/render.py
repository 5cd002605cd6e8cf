"""``python -m jobs.launch.render <stage> [--merge] [overrides]``: print the stage's Kubernetes Job
as YAML, so that ``make job STAGE=evaluate ARGS="..." | kubectl apply -f -`` launches it with
kubectl alone. ``monitor`` prints a CronJob on ``monitor.schedule``. A sharded stage (``evaluate.shards=4``) prints its Indexed Job of shards; once that
has ended, ``--merge`` (``make job ... MERGE=1``) prints the Job that merges them and reruns any
shard that failed."""

from __future__ import annotations

import sys
import uuid

from jobs.core.contract import MONITOR, STAGES
from jobs.core.errors import UserError, exit_code, one_line


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in (*STAGES, MONITOR):
        print(f"error: give a stage first: one of {', '.join((*STAGES, MONITOR))}", file=sys.stderr)
        return 2
    try:
        manifest = render(args[0], [a for a in args[1:] if a != "--merge"], "--merge" in args)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return exit_code(e)
    import yaml

    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return 0


def render(stage: str, overrides: list[str], merge: bool) -> dict:
    """The stage's Job (its Indexed Job of shards, unless ``merge``), or the monitor's CronJob."""
    from jobs.config.compose import compose, new_pipeline_id
    from jobs.launch.launchers import shard_defaults
    from jobs.launch.manifests import render_cron_job, render_shard_job, render_stage_job, shard_count

    given = next((o.split("=", 1)[1] for o in overrides if o.startswith("pipeline_id=")), None)
    if stage == MONITOR:  # a CronJob on monitor.schedule, not a one-off Job
        cfg = compose([*overrides, "launcher=kubernetes"])
        return render_cron_job(overrides, cfg.launcher, str(cfg.monitor.schedule), int(cfg.monitor.drift_exit_code),
                               given or str(cfg.prompt.name))
    pipeline_id = given or new_pipeline_id()
    overrides = overrides if given else [*overrides, f"pipeline_id={pipeline_id}"]
    cfg = compose([*overrides, "launcher=kubernetes"])
    shards = 1 if merge else shard_count(stage, shard_defaults(cfg), overrides)
    if shards == 1:
        return render_stage_job(stage, overrides, pipeline_id, cfg.launcher, uuid.uuid4().hex)
    print(f"# the {shards} shards of {stage}; when the Job has ended, apply the merge: "
          f"make job STAGE={stage} MERGE=1 ARGS='{' '.join(overrides)}'", file=sys.stderr)
    return render_shard_job(stage, overrides, pipeline_id, cfg.launcher, uuid.uuid4().hex, shards)


if __name__ == "__main__":
    sys.exit(main())
