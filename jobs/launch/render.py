"""``python -m jobs.launch.render <stage> [--merge] [overrides]``: print the stage's Kubernetes Job
as YAML, so that ``make job STAGE=evaluate ARGS="..." | kubectl apply -f -`` launches it with
kubectl alone. ``monitor`` prints a CronJob on ``monitor.schedule``. A sharded stage (``evaluate.shards=4``) prints its Indexed Job of shards; once that
has ended, ``--merge`` (``make job ... MERGE=1``) prints the Job that merges them and reruns any
shard that failed."""

from __future__ import annotations

import sys
import uuid


def main(argv: list[str] | None = None) -> int:
    import yaml

    from jobs.core.contract import MONITOR
    from jobs.launch.launchers import shard_defaults
    from jobs.launch.manifests import render_cron_job, render_shard_job, render_stage_job, shard_count
    from jobs.pipeline import STAGES, compose, new_pipeline_id

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in (*STAGES, MONITOR):
        print(f"error: give a stage first: one of {', '.join((*STAGES, MONITOR))}", file=sys.stderr)
        return 2
    stage, overrides = args[0], [a for a in args[1:] if a != "--merge"]
    if stage == MONITOR:  # a CronJob on monitor.schedule, not a one-off Job
        cfg = compose([*overrides, "launcher=kubernetes"])
        name = next((o.split("=", 1)[1] for o in overrides if o.startswith("pipeline_id=")), None) or str(cfg.prompt.name)
        sys.stdout.write(yaml.safe_dump(render_cron_job(overrides, cfg.launcher, str(cfg.monitor.schedule),
                                                        int(cfg.monitor.drift_exit_code), name), sort_keys=False))
        return 0
    pipeline_id = next((o.split("=", 1)[1] for o in overrides if o.startswith("pipeline_id=")), None)
    if pipeline_id is None:
        pipeline_id = new_pipeline_id()
        overrides.append(f"pipeline_id={pipeline_id}")
    cfg = compose([*overrides, "launcher=kubernetes"])
    shards = 1 if "--merge" in args else shard_count(stage, shard_defaults(cfg), overrides)
    if shards > 1:
        job = render_shard_job(stage, overrides, pipeline_id, cfg.launcher, uuid.uuid4().hex, shards)
        print(f"# the {shards} shards of {stage}; when the Job has ended, apply the merge: "
              f"make job STAGE={stage} MERGE=1 ARGS='{' '.join(overrides)}'", file=sys.stderr)
    else:
        job = render_stage_job(stage, overrides, pipeline_id, cfg.launcher, uuid.uuid4().hex)
    sys.stdout.write(yaml.safe_dump(job, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
