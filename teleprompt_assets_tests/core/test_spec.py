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
