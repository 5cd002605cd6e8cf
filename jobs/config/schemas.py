"""Schemas of the config groups that pick an implementation: ``aligner``, ``optimizer``,
``feedback`` and ``launcher=kubernetes`` (``JobSettings``, also the Hydra launcher plugin's base). Each option's YAML file extends its schema (``defaults: [<name>_schema, _self_]``),
so Hydra refuses an unknown key or a wrong type at composition, and the stage exits 2 with
one line. ``typed(node)`` turns a composed group into its dataclass; ``__post_init__`` checks
the ranges, and the stage asks the object what to build instead of dispatching on a name.
Lightweight on purpose: no MLflow import here, so configs are checked before the heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from omegaconf import MISSING

from jobs.core.errors import UserError


def _between(key: str, value: float, low: float, high: float, what: str) -> None:
    if not low < value < high:
        raise UserError(f"{key}={value} must be {what}")


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
        from mlflow.genai.judges.optimizers import MemAlignOptimizer

        return MemAlignOptimizer(reflection_lm=endpoint.uri(endpoint.reflection_model), retrieval_k=self.retrieval_k,
                                 embedding_model=endpoint.embedding_uri(), embedding_dim=self.embedding_dim)


@dataclass
class SimbaConfig(AlignerConfig):
    batch_size: int | None = None  # SIMBA's batch size; null lets MLflow choose
    NAME: ClassVar[str] = "simba"

    def build(self, endpoint: Any) -> Any:
        from mlflow.genai.judges.optimizers import SIMBAAlignmentOptimizer

        return SIMBAAlignmentOptimizer(model=endpoint.uri(endpoint.reflection_model), seed=self.seed,
                                       batch_size=self.batch_size)


@dataclass
class GepaConfig:
    name: str = "gepa"  # prompt optimizer (GEPA through mlflow.genai.optimize_prompts)
    max_metric_calls: int = MISSING  # hard cap on judged rows; promptgate stops GEPA there
    reflection_model: str | None = None  # reflection model URI; null uses openai:/<model.reflection_model>
    minibatch_size: int = 5  # training examples per reflection step
    val_fraction: float = 0.3  # share of the train set GEPA keeps for validation
    seed: int = 0  # GEPA's sampling seed and the train/validation split seed

    def __post_init__(self) -> None:
        _named("optimizer.name", self.name, "gepa", OPTIMIZERS)
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"optimizer.val_fraction={self.val_fraction} must be at least 0 and below 1")


@dataclass
class FeedbackConfig:
    SOURCE: ClassVar[str] = ""
    source: str = MISSING  # rubric | file | ui

    def __post_init__(self) -> None:
        _named("feedback.source", self.source, self.SOURCE, SOURCES)


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
    timeout_s: float = 1800  # how long to wait before giving up with exit 2
    poll_s: float = 10  # seconds between checks

    SOURCE: ClassVar[str] = "ui"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_labels < 1:
            raise UserError("feedback.min_labels must be at least 1")


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


SCHEMAS = {  # (group, schema name) -> dataclass; each option's YAML names its schema in its defaults
    ("aligner", "memalign_schema"): MemAlignConfig,
    ("aligner", "simba_schema"): SimbaConfig,
    ("optimizer", "gepa_schema"): GepaConfig,
    ("feedback", "rubric_schema"): RubricFeedback,
    ("feedback", "file_schema"): FileFeedback,
    ("feedback", "ui_schema"): UiFeedback,
}


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore (called before every composition)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node, provider="promptgate")
    store.store(group="launcher", name="kubernetes", node=JobSettings, provider="promptgate")  # launcher=kubernetes


def typed(node: Any) -> Any:
    """A composed group as its schema's dataclass, its ranges checked; a config without a
    schema (a user's own, from before schemas) is refused with the fix."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    group = node._key()
    kind = OmegaConf.get_type(node)
    if kind not in SCHEMAS.values():
        names = ", ".join(sorted(n for g, n in SCHEMAS if g == group))
        raise UserError(f"{group}: this option has no schema; start its YAML with `defaults: [<schema>, _self_]` "
                        f"naming one of {names}")
    known = {f.name for f in fields(kind)}
    extra = sorted(set(node.keys()) - known)  # added with +key=..., which Hydra lets past a schema
    if extra:
        raise UserError(f"{group}.{extra[0]} is not a key of {kind.__name__}; its keys are {', '.join(sorted(known))}")
    try:
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as e:
        raise UserError(" ".join(str(e).split("\n")[0].split())) from e
