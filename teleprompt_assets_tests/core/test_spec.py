from pathlib import Path

import pytest

from teleprompt_assets.core.config import ConfigError
from teleprompt_assets.core.spec import load_project

ENTRY = """
programs:
  ticket_router:
    module: {module}
    metric: {{kind: {kind}, field: {field}}}
    optimizer: {{name: {optimizer}, params: {{{params}}}}}
"""


def _load(tmp_path: Path, module="teleprompt_assets.samples.ticket_router:TicketRouter", kind="exact_match", field="queue", optimizer="BootstrapFewShot", params=""):
    path = tmp_path / "teleprompt.yaml"
    path.write_text(ENTRY.format(module=module, kind=kind, field=field, optimizer=optimizer, params=params))
    return load_project(path)


def test_sample_config_loads():
    project, specs = load_project("teleprompt.yaml")
    spec = specs["ticket_router"]
    assert spec.input_fields == ("message",) and spec.output_fields == ("queue",)
    assert spec.registered_model_name == "teleprompt-ticket_router"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"module": "nowhere.module:Thing"}, "programs.ticket_router.module: cannot import"),
        ({"module": "teleprompt_assets.samples.ticket_router:QUEUES"}, "programs.ticket_router.module: 'teleprompt_assets.samples.ticket_router:QUEUES' is not a dspy.Module"),
        ({"field": "answer"}, "programs.ticket_router.metric.field: 'answer' is not an output"),
        ({"kind": "bleu"}, "programs.ticket_router.metric.kind"),
        ({"optimizer": "Magic"}, "programs.ticket_router.optimizer: name: unknown optimizer 'Magic'"),
        ({"params": "max_demos: 3"}, "programs.ticket_router.optimizer: params.max_demos: not a parameter of BootstrapFewShot"),
        ({"params": "max_labeled_demos: -1"}, "programs.ticket_router.optimizer: params.max_labeled_demos: must be a non-negative integer"),
    ],
)
def test_bad_entries_name_the_entry_and_field(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=None) as info:
        _load(tmp_path, **kwargs)
    assert message in str(info.value)


def test_the_demos_partitions_start_where_its_data_starts(tmp_path, monkeypatch):
    """TELEPROMPT_START_DATE=auto: the first day of the window ending yesterday, fixed in the home the
    first time, so a later day (or another process) sees the same start (issue 18)."""
    from datetime import date

    import pytest

    from teleprompt_assets.core.config import ConfigError
    from teleprompt_assets.core.spec import START_ANCHOR, load_project, start_override

    assert start_override("auto", tmp_path, 7, today=date(2026, 12, 7)) == date(2026, 11, 30)
    assert (tmp_path / START_ANCHOR).read_text() == "2026-11-30"
    assert start_override("auto", tmp_path, 7, today=date(2027, 3, 1)) == date(2026, 11, 30)  # fixed, not moving
    assert start_override("2026-05-01", tmp_path, 7) == date(2026, 5, 1)
    with pytest.raises(ConfigError, match="TELEPROMPT_START_DATE='yesterday': use a day"):
        start_override("yesterday", tmp_path, 7)
    monkeypatch.setenv("TELEPROMPT_HOME", str(tmp_path))
    monkeypatch.setenv("TELEPROMPT_START_DATE", "auto")
    assert load_project(Path(__file__).resolve().parents[2] / "teleprompt.yaml")[0].start_date == date(2026, 11, 30)
    monkeypatch.delenv("TELEPROMPT_START_DATE")
    assert load_project(Path(__file__).resolve().parents[2] / "teleprompt.yaml")[0].start_date == date(2026, 1, 1)


# --- nonsensical splits and start dates fail at load (issue 25, item 4) --------------------------------

def _load_with(tmp_path: Path, extra: str, split: str | None = None):
    """The one-program config with ``split`` on the entry and ``extra`` top-level lines."""
    body = ENTRY.format(module="teleprompt_assets.samples.ticket_router:TicketRouter", kind="exact_match", field="queue",
                        optimizer="BootstrapFewShot", params="")
    if split is not None:
        body += f"    split: {split}\n"
    path = tmp_path / "teleprompt.yaml"
    path.write_text(extra + body)
    return load_project(path)


@pytest.mark.parametrize(("split", "message"), [
    ("{train: -50, dev: 50, holdout: 100}", "programs.ticket_router.split.train: Input should be greater than or equal to 1"),
    ("{train: 0, dev: 50, holdout: 50}", "programs.ticket_router.split.train: Input should be greater than or equal to 1"),
    ("{train: 60, dev: -10, holdout: 50}", "programs.ticket_router.split.dev: Input should be greater than or equal to 0"),
    ("{train: 50, dev: 10, holdout: 0}", "programs.ticket_router.split.holdout: Input should be greater than or equal to 1"),
    ("{train: 150, dev: 0, holdout: 50}", "programs.ticket_router.split.train: Input should be less than or equal to 100"),
    ("{train: 50, dev: 10, holdout: 30}", "programs.ticket_router.split: Value error, train + dev + holdout must be 100 (percent), got 50 + 10 + 30 = 90"),
], ids=["negative train balanced by holdout", "train 0", "negative dev", "holdout 0", "train over 100", "sum 90"])
def test_a_nonsensical_split_fails_at_load_naming_the_entry_and_field(tmp_path, split, message):
    """``{train: -50, dev: 50, holdout: 100}`` sums to 100 and passed: the program never trained."""
    with pytest.raises(ConfigError) as info:
        _load_with(tmp_path, "", split)
    assert message in str(info.value), str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_a_split_without_dev_loads(tmp_path):
    assert _load_with(tmp_path, "", "{train: 60, dev: 0, holdout: 40}")[1]["ticket_router"].config.split.dev == 0


@pytest.mark.parametrize(("start", "message"), [
    ("0001-01-01", "start_date: Value error, 0001-01-01 is before 2000-01-01"),
    ("1999-12-31", "start_date: Value error, 1999-12-31 is before 2000-01-01"),
    ("9999-12-30", "start_date: Value error, 9999-12-30 is after 9998-12-29"),
])
def test_an_absurd_start_date_fails_at_load(tmp_path, start, message):
    """``start_date: 0001-01-01`` loaded, and failed later inside ``raw_traces``."""
    with pytest.raises(ConfigError) as info:
        _load_with(tmp_path, f"start_date: {start}\n")
    assert message in str(info.value), str(info.value)


def test_an_absurd_start_date_override_fails_at_load(tmp_path, monkeypatch):
    from teleprompt_assets.core.spec import start_override

    with pytest.raises(ConfigError, match=r"TELEPROMPT_START_DATE='0001-01-01': 0001-01-01 is before 2000-01-01"):
        start_override("0001-01-01", tmp_path, 7)
    assert _load_with(tmp_path, "start_date: 2000-01-01\n")[0].start_date.year == 2000


@pytest.mark.parametrize(("written", "meant"), [("off", "off"), ("on", "on"), ("'off'", "off"), ("auto", "auto")])
def test_lm_cache_takes_off_and_on_as_written(tmp_path, written, meant):
    """YAML reads an unquoted ``off`` as false: ``cache: off``, as the docs write it, was rejected."""
    assert _load_with(tmp_path, f"lm:\n  cache: {written}\n")[0].lm.cache == meant
