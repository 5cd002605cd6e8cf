"""Every config composes, alone and as part of the pipeline (lightning-hydra-template style)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from jobs.config.schemas import register_schemas, settings
from jobs.core.errors import UserError
from jobs.core.paths import CONF_DIR
from tests.conftest import MODEL_OPTIONS

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_with(*overrides: str):
    register_schemas()  # as every stage does before composing
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="pipeline", overrides=list(overrides))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option):
    extra = ["feedback.path=labels.jsonl"] if (group, option) == ("feedback", "file") else []
    cfg = compose_with(f"{group}={option}", *extra)
    container = OmegaConf.to_container(cfg, resolve=False)
    assert group == "experiment" or container[group]
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def test_default_pipeline_resolves_to_the_baseball_experiment():
    cfg = compose_with()
    assert cfg.experiment_name == "baseball"
    assert cfg.mlflow.experiment == "promptgate-baseball"
    assert cfg.prompt.name == "baseball-hitting-assistant"
    assert cfg.feedback.criteria[0].name == "recommendation"  # the rubric comes from the experiment
    assert OmegaConf.to_container(cfg.model, resolve=True)["provider"] == "sim"


def test_every_key_has_a_comment():
    """A one-line comment on every key: the config is the documentation."""
    missing = []
    for path in CONF_DIR.rglob("*.yaml"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
                continue
            if stripped.endswith("|") and "#" in stripped:
                continue
            in_block = line.startswith("  ") and not stripped.split(":")[0].replace("_", "").isalnum()
            if "#" not in stripped and not in_block and not stripped.endswith(":") and "defaults" not in stripped:
                missing.append(f"{path.relative_to(CONF_DIR)}:{n}: {stripped}")
    assert not missing, "keys without a comment:\n" + "\n".join(missing)


@pytest.mark.parametrize("group", ["aligner", "optimizer", "feedback"])
def test_each_option_of_a_picked_group_is_its_schemas_dataclass(group):
    kinds = set()
    for option in options(group):
        extra = ["feedback.path=labels.jsonl"] if (group, option) == ("feedback", "file") else []
        kinds.add(type(settings(compose_with(f"{group}={option}", *extra), group)).__name__)
    assert kinds == {"aligner": {"MemAlignConfig", "SimbaConfig"}, "optimizer": {"GepaConfig"},
                     "feedback": {"RubricFeedback", "FileFeedback", "UiFeedback"}}[group]


@pytest.mark.parametrize("override,says", [
    ("aligner.holdout_fraction=lots", "holdout_fraction"),  # not a float
    ("optimizer.max_metric_calls=many", "max_metric_calls"),  # not an int
    ("feedback.expert=me", "expert"),  # not a key
])
def test_the_schema_refuses_unknown_keys_and_wrong_types_at_composition(override, says):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with pytest.raises((HydraException, OmegaConfBaseException)) as e:
        compose_with(override)
    assert says in str(e.value)


@pytest.mark.parametrize("override,says", [
    ("aligner.holdout_fraction=1.5", "aligner.holdout_fraction=1.5 must be between 0 and 1"),
    ("aligner.name=other", "aligner.name 'other' is unknown; use aligner=memalign or aligner=simba"),
    ("optimizer.val_fraction=1.0", "optimizer.val_fraction=1.0 must be at least 0 and below 1"),
    ("+aligner.retrieval_kk=3", "aligner.retrieval_kk is not a key of MemAlignConfig"),  # + gets past Hydra
])
def test_the_schema_checks_ranges_and_names(override, says):
    group = override.lstrip("+").split(".")[0]
    with pytest.raises(UserError, match=says.replace(".", r"\.").replace("=", "=")):
        settings(compose_with(override), group)


def test_a_typo_in_a_users_own_option_file_fails_at_composition(tmp_path):
    """A user's aligner file outside the repo extends the schema: its typo is caught there."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    (tmp_path / "aligner").mkdir()
    (tmp_path / "aligner" / "mine.yaml").write_text("defaults:\n  - memalign_schema\n  - _self_\nname: memalign\n"
                                                    "holdout_fraction: 0.3\nretreival_k: 5\n")
    with pytest.raises((HydraException, OmegaConfBaseException)) as e:
        compose_with("aligner=mine", f"hydra.searchpath=[file://{tmp_path}]")
    assert "retreival_k" in str(e.value)


@pytest.mark.parametrize("override,says", [
    ("optimizer.max_metric_calls=abc", "optimizer.max_metric_calls=abc: Value 'abc' of type 'str' could not be converted to "
                                       "Integer; give a whole number"),
    ("optimizer.max_metric_call=10", "optimizer.max_metric_call is not a key; did you mean optimizer.max_metric_calls?"),
    ("prompt.companions={responder:{name:r,seed_text:x}}",
     "prompt.companions.responder is not a key yet; add it as +prompt.companions.responder=<value>"),
    ("evaluate.max_workerz=2", "evaluate.max_workerz is not a key; did you mean evaluate.max_workers?"),
    ("model=doesnotexist", "model=doesnotexist: no such option; use one of " + MODEL_OPTIONS),
    ("experiment=nope", "experiment=nope: no such option; use one of baseball, shop"),
    ("aligner=nope", "aligner=nope: no such option; use one of memalign, simba"),
    ("gate.min_judge_kappa=high", "give a number"),
    ("gate.fail_on_refuse=perhaps", "give true or false"),
    ("zzz=1", "zzz is not a key; `python -m jobs.evaluate --cfg job` prints every key"),
])
def test_config_errors_name_the_key_the_nearest_key_or_the_options(override, says, capsys):
    """check_overrides raises the one line a stage prints after "error: " (and exits 2 with)."""
    from jobs.config.entry import check_overrides
    from jobs.core.errors import EXIT_BAD_INPUT, exit_code

    with pytest.raises(UserError) as e:
        check_overrides([override], "evaluate")
    msg = str(e.value)
    assert exit_code(e.value) == EXIT_BAD_INPUT and "\n" not in msg and msg.startswith("config: ") and says in msg, msg
    assert capsys.readouterr().err == ""  # library code prints nothing: the stage prints the error
    if override.startswith(("zzz", "model=", "experiment=", "aligner=")):
        return
    key, value = override.split("=", 1)
    with pytest.raises(UserError) as e:  # the same value in a sweep (-m key=good,bad) fails up front too
        check_overrides([f"{key}={value},{value}"], "evaluate")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("config: ") and says in msg, msg


def test_a_bad_override_is_a_user_error_of_one_line():
    from jobs.config.entry import check_overrides

    with pytest.raises(UserError) as e:
        check_overrides(["evaluate.max_workers=[1"], "evaluate")
    assert str(e.value).startswith("bad override: ") and str(e.value).endswith(
        "; use key=value as in `python -m jobs.evaluate --cfg job`") and "\n" not in str(e.value)


def test_a_config_folder_that_does_not_exist_is_a_user_error(monkeypatch, tmp_path):
    from jobs.config.entry import CONFIG_PATH_ENV, with_user_configs

    monkeypatch.setenv(CONFIG_PATH_ENV, "/nowhere/conf")
    with pytest.raises(UserError) as e:
        with_user_configs(["a=1"])
    assert str(e.value) == ("$PROMPTGATE_CONFIG_PATH: /nowhere/conf is not a folder; give the folder that holds your "
                            "config groups (experiment/, agent/, ...)")
    monkeypatch.setenv(CONFIG_PATH_ENV, str(tmp_path))
    assert with_user_configs(["a=1"]) == ["a=1", f"hydra.searchpath=[file://{tmp_path}]"]


@pytest.mark.parametrize("override,says", [
    ("model=doesnotexist", "model=doesnotexist: no such option; use one of " + MODEL_OPTIONS),
    ("aligner=nope", "aligner=nope: no such option; use one of memalign, simba"),  # not the *_schema configs
    ("evaluate.max_workerz=2", "evaluate.max_workerz is not a key; did you mean evaluate.max_workers?"),
    ("optimzer.max_metric_calls=10", "optimzer.max_metric_calls is not a key; did you mean optimizer.max_metric_calls?"),
    ("evaluate={max_workerz: 2}", "evaluate.max_workerz is not a key; did you mean evaluate.max_workers?"),
    ("gate.fail_on_refuse=perhaps", "gate.fail_on_refuse=perhaps: Value 'perhaps' is not a valid bool (type str); "
                                    "give true or false"),
    ("dataset.input_keys=3", "dataset.input_keys=3: Invalid value assigned: int is not a ListConfig, list or tuple.; "
                             "give a list, like [a, b]"),
])
def test_config_error_reads_the_fields_of_hydras_exceptions_not_their_wording(override, says):
    """The same line from Hydra's real error and from one whose message says nothing: the
    option, the key and the wanted type come from the exceptions' fields."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    from jobs.config.entry import compose_plain, config_error

    register_schemas()
    with pytest.raises((ConfigCompositionException, MissingConfigException)) as composed:
        compose_plain(["experiment=baseball", override])
    real = composed.value
    assert config_error(real, ["experiment=baseball", override], "evaluate") == says
    if isinstance(real, MissingConfigException):
        mute = MissingConfigException("-", missing_cfg_file=real.missing_cfg_file, options=real.options)
    else:
        mute = ConfigCompositionException("-")
        mute.__cause__ = real.__cause__
    assert config_error(mute, ["experiment=baseball", override], "evaluate") == says


def test_config_error_without_fields_to_read_gives_hydras_first_line():
    from hydra.errors import ConfigCompositionException

    from jobs.config.entry import config_error

    e = ConfigCompositionException("Could not delete from config. 'zzz' does not exist.\nmore")
    assert config_error(e, ["~zzz"], "gate") == ("Could not delete from config. 'zzz' does not exist.; "
                                                 "`python -m jobs.gate --help` lists the groups and their options")


def test_the_flag_table_is_hydras():
    """split_args's copy of which Hydra flags take a value is Hydra's own argparse table. The
    parser is private (hydra._internal), so only this test reads it: an upgrade that adds,
    drops or changes a flag fails here instead of splitting arguments wrongly."""
    from hydra._internal.utils import get_args_parser

    from jobs.config.entry import FLAGS_WITH_VALUE, INFO_TOPICS

    flags = [a for a in get_args_parser()._actions if a.option_strings]
    assert FLAGS_WITH_VALUE == {s for a in flags if a.nargs not in (0, "?") for s in a.option_strings}
    optional = [a for a in flags if a.nargs == "?"]  # a value only when one of its choices follows
    assert [a.option_strings for a in optional] == [["--info", "-i"]] and set(optional[0].choices) == INFO_TOPICS


@pytest.mark.parametrize("args,flags,overrides", [
    (["experiment=shop", "--cfg", "job"], ["--cfg", "job"], ["experiment=shop"]),
    (["--cfg", "job", "experiment=shop", "-p", "prompt"], ["--cfg", "job", "-p", "prompt"], ["experiment=shop"]),
    (["a=1", "-m", "b=1,2"], ["-m"], ["a=1", "b=1,2"]),
    (["--info", "defaults", "a=1"], ["--info", "defaults"], ["a=1"]),
    (["--info", "a=1"], ["--info"], ["a=1"]),
    (["-sc", "install=bash"], ["-sc"], ["install=bash"]),  # -sc takes no value: install=bash is an override to Hydra
])
def test_flags_and_overrides_are_told_apart_in_any_order(args, flags, overrides):
    from jobs.config.entry import split_args

    assert split_args(args) == (flags, overrides)


@pytest.mark.parametrize("args", [["experiment=shop", "--cfg", "job"], ["--cfg", "job", "experiment=shop"],
                                  ["experiment=shop", "--help"]])
def test_cfg_job_works_before_or_after_the_overrides(args):
    """`--cfg job` after an override once failed with "unrecognized arguments: hydra.job.name=evaluate"."""
    import subprocess
    import sys

    from jobs.core.paths import ROOT

    proc = subprocess.run([sys.executable, "-m", "jobs.evaluate", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "experiment_name: shop" in proc.stdout and "name: support_quality" in proc.stdout
    assert ("Powered by Hydra" in proc.stdout) == ("--help" in args)


def test_the_root_schema_refuses_out_of_range_values_and_extra_keys():
    from jobs.config.schemas import check_settings

    for override, says in [("limits.max_file_mb=0", "limits.max_file_mb=0.0 must be above 0"),
                           ("evaluate.max_workers=0", "evaluate.max_workers=0 must be at least 1"),
                           ("compare.ci_level=1.5", "compare.ci_level=1.5 must be between 0 and 1"),
                           ("+evaluate.max_worker=2", "evaluate.max_worker is not a key of EvaluateSettings; did you "
                                                      "mean evaluate.max_workers?"),
                           ("+shards=2", "shards is not a key of PipelineSettings")]:
        with pytest.raises(UserError) as e:
            check_settings(compose_with(override))
        assert str(e.value).startswith(says), override
    check_settings(compose_with())  # the defaults pass


@pytest.mark.parametrize("override", ["evaluate.max_workers=abc", "compare.ci_level=high", "evaluate.max_worker=2",
                                      "limits.max_file_mb=big", "compare.shards=four"])
def test_quick_config_errors_read_exactly_like_the_composed_ones(override):
    """The schema-only check that exits before Hydra composes says what composing would say."""
    from jobs.config.entry import compose_plain, config_error, quick_error
    from jobs.config.schemas import register_schemas

    register_schemas()
    with pytest.raises(Exception) as composed:
        compose_plain([override])
    assert quick_error([override]) == config_error(composed.value, [override], "evaluate")


@pytest.mark.parametrize("override", ["evaluate.max_workers=1.5", "evaluate.max_workers=${oc.env:W,2}",
                                      "+evaluate.extra=1", "optimizer.max_metric_calls=abc", "evaluate.shard=null",
                                      "model.temperature=hot", "evaluate.max_workers=8"])
def test_quick_config_check_leaves_what_it_cannot_judge_to_hydra(override):
    from jobs.config.entry import quick_error

    assert quick_error([override]) is None


@pytest.fixture()
def multirun_point(tmp_path):
    """HydraConfig as Hydra sets it for sweep point #3 (``optimizer.seed=1``) of a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=["optimizer.seed=1"], return_hydra_config=True)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.num = 3
        cfg.hydra.runtime.output_dir = str(tmp_path)
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    yield cfg, tmp_path
    HydraConfig.instance().cfg = before


def test_the_sweep_callback_records_a_failed_point_with_its_error(multirun_point):
    import json

    from hydra.core.utils import JobReturn, JobStatus

    from jobs.launch.sweeps import RESULT_FILE, SweepSummary, summary_table

    cfg, out = multirun_point
    ret = JobReturn(overrides=["optimizer.seed=1"], status=JobStatus.FAILED)
    ret.return_value = RuntimeError("the judge\nwent away")
    SweepSummary().on_job_end(config=cfg, job_return=ret)
    record = json.loads((out / RESULT_FILE).read_text())
    assert record == {"num": 3, "overrides": "optimizer.seed=1",
                      "result": {"outcome": "failed", "error": "RuntimeError: the judge went away"}}
    assert " failed " in summary_table([record], None)


def test_the_sweep_callback_records_a_completed_points_result(multirun_point):
    import json

    from hydra.core.utils import JobReturn, JobStatus

    from jobs.launch.sweeps import RESULT_FILE, SweepSummary

    cfg, out = multirun_point
    ret = JobReturn(overrides=["optimizer.seed=1"], status=JobStatus.COMPLETED)
    ret.return_value = {"outcome": "bad_input", "error": "optimizer.seed=1 is bad"}  # what stage_main returns for one
    SweepSummary().on_job_end(config=cfg, job_return=ret)
    assert json.loads((out / RESULT_FILE).read_text())["result"] == {"outcome": "bad_input",
                                                                     "error": "optimizer.seed=1 is bad"}
