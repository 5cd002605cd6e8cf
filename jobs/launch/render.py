"""``python -m jobs.launch.render <stage> [overrides]``: print the stage's Kubernetes Job as YAML,
so that ``make job STAGE=evaluate ARGS="..." | kubectl apply -f -`` launches it with kubectl alone."""

from __future__ import annotations

import sys
import uuid


def main(argv: list[str] | None = None) -> int:
    import yaml

    from jobs.launch.manifests import render_stage_job
    from jobs.pipeline import STAGES, compose, new_pipeline_id

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in STAGES:
        print(f"error: give a stage first: one of {', '.join(STAGES)}", file=sys.stderr)
        return 2
    stage, overrides = args[0], args[1:]
    pipeline_id = next((o.split("=", 1)[1] for o in overrides if o.startswith("pipeline_id=")), None)
    if pipeline_id is None:
        pipeline_id = new_pipeline_id()
        overrides.append(f"pipeline_id={pipeline_id}")
    cfg = compose([*overrides, "launcher=kubernetes"])
    job = render_stage_job(stage, overrides, pipeline_id, cfg.launcher, uuid.uuid4().hex)
    sys.stdout.write(yaml.safe_dump(job, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
