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
