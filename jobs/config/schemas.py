"""Config schemas, the one place that checks keys and types.

``PipelineSettings`` is the root schema (conf/pipeline.yaml names it first in its defaults):
it types every section and the groups with one shape (model, agent, judge, dataset, gate,
gateway), so a user's own YAML for those groups is checked without naming a schema. The
groups that pick an implementation (``aligner``, ``optimizer``, ``feedback``, and
``launcher=kubernetes`` whose ``JobSettings`` is also the Hydra launcher plugin's base)
have one schema per option: each option's YAML extends it (``defaults: [<name>_schema, _self_]``).
Hydra refuses an unknown key or a wrong type at composition, and the stage exits 2 with
one line. ``settings(cfg, section)`` turns a composed section or group into its dataclass;
``__post_init__`` checks the ranges, and the stage asks the object what to build instead of
dispatching on a name.
Lightweight on purpose: no MLflow import here, so configs are checked before the heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from omegaconf import MISSING

from jobs.core.errors import UserError
from jobs.gateway.server import DEFAULT_CAPABILITIES, capability_problem, max_tokens_problem


def _between(key: str, value: float, low: float, high: float, what: str) -> None:
    if not low < value < high:
        raise UserError(f"{key}={value} must be {what}")


def _check_shard(section: str, shards: int, shard: int | None) -> None:
    if not 1 <= shards <= 64:
        raise UserError(f"{section}.shards={shards} must be between 1 and 64")
    if shard is not None and not 0 <= shard < shards:
        raise UserError(f"{section}.shard={shard} is not a shard of {section}.shards={shards}; "
                        f"use 0 to {shards - 1}, or leave it null to run them all")


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise UserError(f"{key}={value} must be at least {low}")


MAX_TOKENS = {"agent": 1024, "judge": 512, "reflection": 4096}  # model.max_tokens unless a config says otherwise

ALIGNERS = "use aligner=memalign or aligner=simba"
OPTIMIZERS = "use optimizer=gepa_small, gepa_default or gepa_large"
SOURCES = "use feedback=rubric, feedback=file or feedback=ui"


def _named(key: str, given: str, expected: str, options: str) -> None:
    if given != expected:
        raise UserError(f"{key} '{given}' is unknown; {options}")


@dataclass
class AlignerConfig:
    NAME: ClassVar[str] = ""
    name: str = MISSING  # alignment optimizer: memalign | simba
    holdout_fraction: float = 0.4  # share of expert labels kept out of alignment to measure agreement
    seed: int = 0  # seed of the label split
    min_labels: int = 2  # fewest labels the alignment part may have
    min_holdout: int = 8  # fewest held-out labels agreement is measured on
    min_gain: float = 0.05  # register the aligned judge only when held-out kappa rose by at least this

    def __post_init__(self) -> None:
        _named("aligner.name", self.name, self.NAME, ALIGNERS)
        _between("aligner.holdout_fraction", self.holdout_fraction, 0, 1, "between 0 and 1")
        if self.min_holdout < 2:
            raise UserError(f"aligner.min_holdout={self.min_holdout} must be at least 2: agreement needs a pass and a fail")
        if self.min_gain < 0:
            raise UserError(f"aligner.min_gain={self.min_gain} must not be negative")

    def build(self, endpoint: Any) -> Any:
        """The MLflow alignment optimizer."""
        raise NotImplementedError


@dataclass
class MemAlignConfig(AlignerConfig):
    retrieval_k: int = 3  # similar past examples shown to the aligned judge
    embedding_dim: int = 256  # size MemAlign asks for (OpenAI text-embedding-3 models only)
    NAME: ClassVar[str] = "memalign"

    def build(self, endpoint: Any) -> Any:
        from jobs.eval.aligners import memalign

        return memalign(self, endpoint)


@dataclass
class SimbaConfig(AlignerConfig):
    batch_size: int | None = None  # SIMBA's batch size; null lets MLflow choose
    NAME: ClassVar[str] = "simba"

    def build(self, endpoint: Any) -> Any:
        from jobs.eval.aligners import simba

        return simba(self, endpoint)


@dataclass
class GepaConfig:
    name: str = "gepa"  # prompt optimizer (GEPA through mlflow.genai.optimize_prompts)
    max_metric_calls: int = MISSING  # hard cap on judged rows; promptgate stops GEPA there
    reflection_model: str | None = None  # reflection model URI; null uses openai:/<model.reflection_model>
    minibatch_size: int = 5  # training examples per reflection step
    val_fraction: float = 0.3  # share of the train set GEPA keeps for validation
    seed: int = 0  # GEPA's sampling seed and the train/validation split seed
    min_context_tokens: int = 16384  # the least window reflection needs: its prompts quote a minibatch's traces
    start: str = "production"  # what GEPA improves: production (what compare measures as baseline) | seed

    def __post_init__(self) -> None:
        _named("optimizer.name", self.name, "gepa", OPTIMIZERS)
        if self.start not in ("production", "seed"):
            raise UserError(f"optimizer.start '{self.start}' is unknown; use production (build on what was promoted) "
                            "or seed (start again from the seed prompt)")
        _at_least("optimizer.min_context_tokens", self.min_context_tokens, 1)
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"optimizer.val_fraction={self.val_fraction} must be at least 0 and below 1")


@dataclass
class FeedbackConfig:
    SOURCE: ClassVar[str] = ""
    source: str = MISSING  # rubric | file | ui

    def __post_init__(self) -> None:
        _named("feedback.source", self.source, self.SOURCE, SOURCES)

    @property
    def may_stop_the_pipeline(self) -> bool:
        """Whether the stage can end without a result, for the pipeline to resume later."""
        return False


@dataclass
class RubricFeedback(FeedbackConfig):
    expert_id: str = "rubric"  # source id the HUMAN assessments are attributed to
    criteria: Any = MISSING  # the checks, from the experiment config (expert_rubric)
    SOURCE: ClassVar[str] = "rubric"


@dataclass
class FileFeedback(FeedbackConfig):
    path: str = MISSING  # the label file, local or s3://
    expert_id: str = "file"  # source id used when a row names no expert
    SOURCE: ClassVar[str] = "file"


@dataclass
class UiFeedback(FeedbackConfig):
    min_labels: int = 5  # HUMAN assessments under the judge's name to wait for
    reviewers: list[str] = field(default_factory=list)  # users the review queue is assigned to (at most 10)
    queue: str | None = None  # review queue name; null: promptgate-<pipeline_id>
    wait: bool = True  # false: set the queue up, exit 0, and resume the pipeline later with the same id
    timeout_s: float = 1800  # how long to wait before giving up with exit 2
    poll_s: float = 10  # seconds between checks

    SOURCE: ClassVar[str] = "ui"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_labels < 1:
            raise UserError("feedback.min_labels must be at least 1")
        if len(self.reviewers) > 10:
            raise UserError(f"feedback.reviewers has {len(self.reviewers)} users; a review queue takes at most 10")

    @property
    def may_stop_the_pipeline(self) -> bool:
        return not self.wait  # the queue is set up; the reviewers answer while nothing runs


@dataclass
class LocalSettings:
    """`launcher=local`: each stage a process on this machine."""

    kind: str = "local"  # local | kubernetes
    warm_start: bool = True  # fork each stage from a process that has imported MLflow & co once (jobs/launch/warm.py)


@dataclass
class JobSettings:
    """How a stage runs as a Kubernetes Job: `launcher=kubernetes`, and the base of the Hydra
    launcher's config (hydra/launcher=kubernetes). Registered as launcher/kubernetes."""

    kind: str = "kubernetes"  # local | kubernetes
    namespace: str = "promptgate"  # namespace of the Jobs (the launcher's Role is limited to it)
    image: str = "${oc.env:IMG,promptgate-jobs:dev}"  # the jobs image (docker/jobs.Dockerfile)
    image_pull_policy: str = "IfNotPresent"  # Always for mutable tags
    service_account: str = "promptgate-stage"  # stage pods' account: no API rights, no token
    config_map: str = "promptgate-config"  # env of every stage pod (MLFLOW_TRACKING_URI, ...)
    secret_env: dict[str, str] = field(default_factory=dict)  # NAME: secret/key; none by default: the LLM key lives only in the gateway
    extra_env: dict[str, str] = field(default_factory=dict)  # plain env added to every stage pod
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "500m", "memory": "1Gi"})  # a stage pod asks for
    limits: dict[str, str] = field(default_factory=lambda: {"cpu": "2", "memory": "3Gi"})  # a stage pod may use at most
    backoff_limit: int = 2  # pod retries after a crash (exit code 2, bad input, fails at once)
    active_deadline_seconds: int = 7200  # the longest a stage may run
    ttl_seconds_after_finished: int = 86400  # finished Jobs are cleaned up after a day
    poll_s: float = 2.0  # seconds between status checks while waiting
    queue: str | None = None  # Kueue LocalQueue: Jobs are created suspended with its label until Kueue admits them


@dataclass
class ModelSettings:
    provider: str = MISSING  # endpoint kind: sim | openai | openai_compatible
    base_url: str | None = None  # the API's /v1 URL
    api_key_env: str = "OPENAI_API_KEY"  # variable holding the key
    agent_model: str = MISSING  # model the agent calls
    judge_model: str = MISSING  # model the judges call
    reflection_model: str = MISSING  # model for MemAlign distillation and GEPA reflection
    embedding_model: str = MISSING  # model for MemAlign's embeddings
    temperature: float = 0.0  # agent sampling temperature
    request_timeout_s: float = 60  # timeout of one LLM call
    prices: dict[str, list[float]] = field(default_factory=dict)  # USD per 1M tokens [input, output]
    sim: dict[str, Any] | None = None  # settings of a simulator the stage starts (model=sim)
    max_tokens: dict[str, int] = field(default_factory=lambda: dict(MAX_TOKENS))  # longest reply per kind of call
    capabilities: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CAPABILITIES))  # what the endpoint does differently
    context_tokens: int | None = None  # the server's context window (prompt plus reply); null: not stated

    def __post_init__(self) -> None:
        _at_least("model.temperature", self.temperature, 0)
        _between("model.request_timeout_s", self.request_timeout_s, 0, float("inf"), "above 0")
        for name, problem in (("max_tokens", max_tokens_problem), ("capabilities", capability_problem)):
            for key, value in getattr(self, name).items():
                if (why := problem(f"model.{name}", str(key), value)) is not None:
                    raise UserError(why)
        if self.context_tokens is not None:
            _at_least("model.context_tokens", self.context_tokens, 1)


@dataclass
class JudgeSettings:
    name: str = MISSING  # judge name; also the name of expert assessments
    instructions: str = MISSING  # what the judge checks
    feedback_value_type: str = "bool"  # bool | float | categorical
    categories: list[str] | None = None  # allowed values, best first, when categorical
    pass_threshold: float = 0.5  # a float value at or above this counts as a pass; must lie on judge.scale
    scale: list[float] | None = None  # a float judge's range [low, high], e.g. [1, 5]; null: [0, 1]
    model: str | None = None  # judge model URI; null uses openai:/<model.judge_model>
    scorers: list[Any] = field(default_factory=list)  # further scorers: an MLflow class name (Safety), {class: Guidelines, guidelines: [...]}, or a custom judge {name: concise, instructions: "...{{ outputs }}..."}


@dataclass
class DatasetSettings:
    train: str | None = None  # train JSONL (path or s3://) or MLflow evaluation dataset (mlflow-dataset:<name or id>)
    heldout: str | None = None  # held-out set, disjoint from train; the same forms
    input_keys: list[str] = field(default_factory=lambda: ["question"])  # keys every record's inputs must have: a string or chat messages
    required_expectations: list[str] = field(default_factory=list)  # keys every record's expectations must have
    traffic: str | None = None  # fresh questions for the traffic generator (make traffic); null: the held-out ones
    slices: dict[str, str] = field(default_factory=dict)  # name -> <expectations key>=<value>: compare's per-slice table, gate.slices

    def __post_init__(self) -> None:
        from jobs.eval.datasets import slice_rule

        for name, where in self.slices.items():
            slice_rule(name, where)


@dataclass
class GateSettings:
    min_delta: float = 0.10  # smallest held-out pass-rate gain
    alpha: float = 0.05  # largest exact McNemar p-value
    ci_low_min: float = 0.0  # smallest lower bound of the gain's confidence interval
    max_regressions: int = 6  # most questions that may go from pass to fail
    max_error_rate: float = 0.10  # largest share of errored rows in either arm
    min_judge_kappa: float | None = 0.2  # least held-out kappa of the judge compare used; null: no check
    hard_gates: list[Any] = field(default_factory=list)  # [{scorer, min, no_regression}]: a judge.scorers entry's candidate mean
    slices: list[Any] = field(default_factory=list)  # [{slice, min, no_regression}]: a dataset.slices slice's candidate pass rate
    regression_alpha: float = 0.05  # family-wise error of the no-regression tests together (Holm)
    fail_on_refuse: bool = False  # exit 3 on refusal
    rollback: bool = False  # move production back to the version before the last promotion

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise UserError(f"gate.alpha={self.alpha} must be in (0, 1]")
        if self.min_judge_kappa is not None and not -1 <= self.min_judge_kappa <= 1:
            raise UserError(f"gate.min_judge_kappa={self.min_judge_kappa} must be between -1 and 1, or null")
        if self.max_error_rate < 0 or self.max_regressions < 0:
            raise UserError("gate.max_error_rate and gate.max_regressions must not be negative")
        if not 0 < self.regression_alpha <= 1:
            raise UserError(f"gate.regression_alpha={self.regression_alpha} must be in (0, 1]")
        for key, subject, example in (("hard_gates", "scorer", "{scorer: Safety, min: 1.0}"),
                                      ("slices", "slice", "{slice: injection, min: 0.8}")):
            for i, spec in enumerate(getattr(self, key)):
                where = f"gate.{key}[{i}]"
                if not isinstance(spec, dict) or subject not in spec:
                    raise UserError(f"{where} needs {subject}, and min and/or no_regression, e.g. {example}")
                unknown = sorted(set(spec) - {subject, "min", "no_regression"})
                if unknown:
                    raise UserError(f"{where}: unknown key(s) {unknown}; a gate takes {subject}, min, no_regression")
                if spec.get("min") is None and spec.get("no_regression") is False:
                    raise UserError(f"{where} checks nothing: give a min, or leave no_regression true")
                if spec.get("min") is not None and not isinstance(spec["min"], (int, float)):
                    raise UserError(f"{where}.min={spec['min']!r} must be a number")


@dataclass
class GatewaySettings:
    url: str | None = None  # a running gateway's base URL; null starts one
    cache: str = "readwrite"  # off | read | readwrite
    cache_uri: str = MISSING  # a folder, s3://bucket/prefix or redis://host:port/db
    max_retries: int = 4  # retries of one call on 429, 502-504, timeouts and a 500 whose body changed
    backoff_s: float = 0.2  # backoff factor
    timeout_s: float = 60  # read timeout of one upstream attempt
    retry_after_max_s: float = 10  # the longest Retry-After wait honoured


@dataclass
class MlflowSettings:
    tracking_uri: str = MISSING  # the MLflow server all stages share
    ui_url: str | None = None  # base of the links printed for people
    experiment: str = MISSING  # MLflow experiment that holds the runs and traces
    connect_timeout_s: float = 10  # how long to wait for the server

    def __post_init__(self) -> None:
        _between("mlflow.connect_timeout_s", self.connect_timeout_s, 0, float("inf"), "above 0")


@dataclass
class PromptSettings:
    name: str = MISSING  # prompt registry name of the release's first prompt (the agent's system prompt)
    role: str = "system"  # the key the agent finds this prompt under in its prompts
    seed_file: str | None = None  # file (or s3:// URI) with the seed text
    seed_text: str | None = None  # inline seed text
    commit_message: str = "seed prompt"  # message on a newly registered version
    companions: dict[str, Any] = field(default_factory=dict)  # role: {name, seed_file | seed_text}; released together

    def __post_init__(self) -> None:
        names = {self.name: "prompt.name"}
        for role, spec in self.companions.items():
            where = f"prompt.companions.{role}"
            if role == self.role:
                raise UserError(f"{where}: the role '{role}' is prompt.role's already; give each prompt its own role")
            if not isinstance(spec, dict) or not spec.get("name"):
                raise UserError(f"{where} needs a name, e.g. {{name: my-responder, seed_file: responder.txt}}")
            extra = sorted(set(spec) - {"name", "seed_file", "seed_text"})
            if extra:
                raise UserError(f"{where}.{extra[0]} is not a key of a companion prompt; use name, seed_file or seed_text")
            if not spec.get("seed_file") and not spec.get("seed_text"):
                raise UserError(f"{where} has no seed: set {where}.seed_file or {where}.seed_text")
            if str(spec["name"]) in names:
                raise UserError(f"{where}.name '{spec['name']}' is {names[str(spec['name'])]}'s too; each prompt needs its own name")
            names[str(spec["name"])] = f"{where}.name"


@dataclass
class EvaluateSettings:
    split: str = "train"  # dataset split to evaluate
    max_workers: int = 4  # rows evaluated at once
    max_attempts: int = 3  # passes over rows that came back incomplete
    on_missing: str = "fail"  # fail | record
    shards: int = 1  # processes (pods on a cluster) the rows are split over
    shard: int | None = None  # set per shard process; null runs (or reuses) every shard and merges

    def __post_init__(self) -> None:
        _at_least("evaluate.max_workers", self.max_workers, 1)
        _at_least("evaluate.max_attempts", self.max_attempts, 1)
        _check_shard("evaluate", self.shards, self.shard)
        if self.on_missing not in ("fail", "record"):
            raise UserError(f"evaluate.on_missing '{self.on_missing}' is unknown; use fail or record")


DESIGNS = ("sequential", "fixed")


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"{key}={value} is not one of {', '.join(allowed)}; use {key}={allowed[0]}")


@dataclass
class SequentialSettings:
    spending: str = "obrien_fleming"  # Lan-DeMets spending of gate.alpha over the looks
    boundary: str = "exact"  # each look's McNemar boundary
    futility: str = "conditional_power"  # when to stop because min_delta is out of reach
    futility_threshold: float = 0.2  # conditional power below this stops for futility

    def __post_init__(self) -> None:
        from jobs.eval.sequential import BOUNDARY, FUTILITY, SPENDING

        for key, allowed in (("spending", SPENDING), ("boundary", BOUNDARY), ("futility", FUTILITY)):
            _one_of(f"compare.sequential.{key}", getattr(self, key), allowed)
        _between("compare.sequential.futility_threshold", self.futility_threshold, 0, 1, "between 0 and 1")


@dataclass
class CompareSettings:
    split: str = "heldout"  # dataset split both arms are evaluated on
    n_repeats: int = 5  # runs per question and arm (the sequential design's most looks)
    design: str = "sequential"  # sequential: stop after a look once the answer is clear; fixed: every repeat
    sequential: SequentialSettings = field(default_factory=SequentialSettings)  # the sequential design's rule
    bootstrap: int = 2000  # paired-bootstrap resamples
    ci_level: float = 0.95  # confidence level of the gain's interval
    seed: int = 0  # bootstrap seed
    shards: int = 1  # processes (pods on a cluster) both arms' rows are split over
    shard: int | None = None  # set per shard process; null runs (or reuses) every shard and merges

    def __post_init__(self) -> None:
        _at_least("compare.n_repeats", self.n_repeats, 1)
        _check_shard("compare", self.shards, self.shard)
        _one_of("compare.design", self.design, DESIGNS)
        if self.design == "sequential" and self.shards > 1:
            raise UserError(f"compare.shards={self.shards} needs compare.design=fixed: a sequential compare decides "
                            "after each look, in one process; add compare.design=fixed or set compare.shards=1")
        _at_least("compare.bootstrap", self.bootstrap, 100)
        _between("compare.ci_level", self.ci_level, 0, 1, "between 0 and 1")


@dataclass
class EvidenceSettings:
    min_rows: int = 20  # judged rows under a pass rate
    min_holdout_labels: int = 10  # held-out expert labels under judge-expert agreement
    min_questions: int = 20  # held-out questions under compare's gain

    def __post_init__(self) -> None:
        for key in ("min_rows", "min_holdout_labels", "min_questions"):
            _at_least(f"evidence.{key}", getattr(self, key), 1)


@dataclass
class LimitsSettings:
    max_file_mb: float = 50  # largest dataset, label or seed prompt file
    max_record_kb: float = 64  # longest line (one record) of a dataset or label file
    max_input_chars: int = 4000  # longest input value (a question) of a dataset record

    def __post_init__(self) -> None:
        for key in ("max_file_mb", "max_record_kb", "max_input_chars"):
            _between(f"limits.{key}", getattr(self, key), 0, float("inf"), "above 0")


@dataclass
class MonitorSettings:
    filter: str = MISSING  # search_traces filter that picks the production traces to score
    experiment: str | None = None  # experiment holding production's traces (and the review queue); null: mlflow.experiment
    max_traces: int = 500  # most traces one run scores; the rest wait for the next run
    min_window: int = 30  # fewest traces a window needs before the drift test is judged
    alpha: float = 0.01  # one-sided p-value below which a drop is flagged
    min_drop: float = 0.10  # smallest drop of the pass rate (against the gate's held-out rate) that counts
    drift_exit_code: int = 3  # exit code of a flagged drift; 0 only tags and reports it
    borderline: float = 0.15  # float judges: values this close to pass_threshold go to review, in points of judge.scale
    queue: str = "promptgate-production"  # review queue the failing and borderline traces go to
    sample_rate: float = 1.0  # the share of traces the registered scorer config claims (MLflow's Judges tab)
    max_workers: int = 4  # traces judged at once
    schedule: str = "*/15 * * * *"  # the CronJob's schedule on a cluster

    def __post_init__(self) -> None:
        _at_least("monitor.max_traces", self.max_traces, 1)
        _at_least("monitor.min_window", self.min_window, 5)
        _at_least("monitor.max_workers", self.max_workers, 1)
        _between("monitor.alpha", self.alpha, 0, 1, "between 0 and 1")
        _between("monitor.sample_rate", self.sample_rate, 0, 1.0000001, "above 0 and at most 1")
        if not 0 <= self.min_drop < 1:
            raise UserError(f"monitor.min_drop={self.min_drop} must be at least 0 and below 1")
        if self.borderline < 0:  # its upper bound is the judge's scale (monitor.check)
            raise UserError(f"monitor.borderline={self.borderline} must be at least 0 (points of judge.scale)")
        if not 0 <= self.drift_exit_code <= 125:
            raise UserError(f"monitor.drift_exit_code={self.drift_exit_code} must be between 0 and 125")
        if len(self.schedule.split()) != 5:
            raise UserError(f"monitor.schedule '{self.schedule}' is not a cron schedule of 5 fields, e.g. '*/15 * * * *'")


@dataclass
class TrafficSettings:
    requests: int = 40  # questions the simulated production answers per run
    drift: bool = False  # true: the simulated model behind production gets worse (the simulator's drop_rate)
    drift_drop_rate: float = 0.8  # the simulator's drop_rate while drifting
    seed: int | None = None  # first sampling seed (request i uses seed + i); null: from the clock
    max_workers: int = 4  # requests answered at once

    def __post_init__(self) -> None:
        _at_least("traffic.requests", self.requests, 1)
        _at_least("traffic.max_workers", self.max_workers, 1)
        _between("traffic.drift_drop_rate", self.drift_drop_rate, 0, 1, "between 0 and 1")


@dataclass
class PipelineSettings:
    """The root of every stage's config (conf/pipeline.yaml)."""

    model: ModelSettings = MISSING
    agent: Any = MISSING  # the factory's own settings: checked against its signature (jobs.eval.agent.check)
    judge: JudgeSettings = MISSING
    dataset: DatasetSettings = MISSING
    feedback: Any = MISSING  # typed by its option's schema
    aligner: Any = MISSING  # typed by its option's schema
    optimizer: Any = MISSING  # typed by its option's schema
    gate: GateSettings = MISSING
    gateway: GatewaySettings = MISSING
    budget: Any = MISSING  # units checked by jobs.gateway.client.check_budget_config
    launcher: Any = MISSING  # typed by its option's schema: LocalSettings or JobSettings
    pipeline_id: str = "adhoc"
    sweep_point: bool = False
    force: bool = False
    state_dir: str = ".promptgate"
    experiment_name: str = MISSING
    expert_rubric: Any = None  # the experiment's programmatic expert
    mlflow: MlflowSettings = field(default_factory=MlflowSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    traffic: TrafficSettings = field(default_factory=TrafficSettings)


SCHEMAS = {  # (group, schema name) -> dataclass; each option's YAML names its schema in its defaults
    ("aligner", "memalign_schema"): MemAlignConfig,
    ("aligner", "simba_schema"): SimbaConfig,
    ("optimizer", "gepa_schema"): GepaConfig,
    ("feedback", "rubric_schema"): RubricFeedback,
    ("feedback", "file_schema"): FileFeedback,
    ("feedback", "ui_schema"): UiFeedback,
    ("launcher", "local_schema"): LocalSettings,
}


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore (called before every composition)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node, provider="promptgate")
    store.store(group="launcher", name="kubernetes", node=JobSettings, provider="promptgate")  # launcher=kubernetes
    store.store(name="pipeline_schema", node=PipelineSettings, provider="promptgate")  # the root


PICKED = ("aligner", "optimizer", "feedback", "launcher")  # groups whose options pick an implementation, one schema each
SECTIONS = ("model", "judge", "dataset", "gate", "gateway", "mlflow", "prompt", "evaluate", "compare",
            "evidence", "limits", "monitor", "traffic")  # the root schema's sections with one shape


def settings(cfg: Any, section: str) -> Any:
    """One section of the root config (a group such as ``aligner`` too) as its schema's
    dataclass, its ranges checked: exit 2 on a bad value. The stages ask this object, not the
    raw config, what to build."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    node = cfg[section]
    kind = OmegaConf.get_type(node)
    if section in PICKED and kind not in (*SCHEMAS.values(), JobSettings):  # a user's own option from before schemas
        names = ", ".join(sorted(n for g, n in SCHEMAS if g == section))
        raise UserError(f"{section}: this option has no schema; start its YAML with `defaults: [<schema>, _self_]` "
                        f"naming one of {names}")
    refuse_extra_keys(section, node, kind)
    try:
        return OmegaConf.to_object(node)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or section
        raise UserError(f"{key} is not set; set it in your experiment config or as {key}=...") from None
    except OmegaConfBaseException as e:
        raise UserError(" ".join(str(e).split("\n")[0].split())) from e


def closest(key: str, known: Any) -> str | None:
    """The known name nearest a mistyped one, if any is near."""
    import difflib

    best = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return best[0] if best else None


def refuse_extra_keys(where: str, node: Any, kind: Any) -> None:
    """A key added with +key=... (Hydra lets it past a schema) is refused, naming the nearest known key."""
    known = {f.name for f in fields(kind)}
    extra = sorted(set(node.keys()) - known)
    if extra:
        prefix = f"{where}." if where else ""
        best = closest(extra[0], known)
        fix = f"did you mean {prefix}{best}?" if best else f"its keys are {', '.join(sorted(known))}"
        raise UserError(f"{prefix}{extra[0]} is not a key of {kind.__name__}; {fix}")


def check_settings(cfg: Any) -> None:
    """Every section of the root schema converts and holds values in range; no key is extra."""
    refuse_extra_keys("", cfg, PipelineSettings)
    for section in (*SECTIONS, *PICKED):
        settings(cfg, section)
