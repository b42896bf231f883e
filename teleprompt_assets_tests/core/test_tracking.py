"""Experiments the pipeline creates or uses say what they hold (issue 18), against a real sqlite store."""

from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.tracking import NOTE_TAG, connect, experiment_id


def _tags(client, exp_id: str) -> dict[str, str]:
    return client.get_experiment(exp_id).tags


def test_the_pipeline_experiment_is_described_and_links_to_dagster(tp_home, monkeypatch):
    monkeypatch.setenv("TELEPROMPT_DAGSTER_UI_URL", "https://dagster.example")
    settings = load_settings()
    client = connect(settings)
    tags = _tags(client, experiment_id(client, settings, settings.pipeline_experiment))
    assert "model version" in tags[NOTE_TAG] and "https://dagster.example/assets/registered_version" in tags[NOTE_TAG]
    assert tags["teleprompt.role"] == "pipeline"
    assert client.get_experiment_by_name(settings.pipeline_experiment).artifact_location.startswith(settings.artifact_root)


def test_a_programs_experiment_names_its_program(tp_home):
    settings = load_settings()
    client = connect(settings)
    exp = experiment_id(client, settings, "teleprompt-production", programs=["ticket_router"])
    tags = _tags(client, exp)
    assert tags["program"] == "ticket_router" and tags["teleprompt.role"] == "production"
    assert "`ticket_router`" in tags[NOTE_TAG] and "traces" in tags[NOTE_TAG]
    shared = _tags(client, experiment_id(client, settings, "shared", programs=["b_prog", "a_prog"]))
    assert shared["program"] == "a_prog,b_prog"


def test_an_experiment_created_before_its_program_is_known_gets_a_note_then_the_programs(tp_home):
    """The app, a seed or an ingest step may open a production experiment by name alone; the note it
    gets then is replaced once the program is known, and a call by name alone does not undo that."""
    settings = load_settings()
    client = connect(settings)
    exp = experiment_id(client, settings, "teleprompt-outreach")
    assert _tags(client, exp).get(NOTE_TAG) and "program" not in _tags(client, exp)
    experiment_id(client, settings, "teleprompt-outreach", programs=["outreach_reply"])
    described = _tags(client, exp)
    assert described["program"] == "outreach_reply" and "`outreach_reply`" in described[NOTE_TAG]
    experiment_id(client, settings, "teleprompt-outreach")
    assert _tags(client, exp) == described


def test_describing_is_idempotent_and_keeps_a_note_people_wrote(tp_home, monkeypatch):
    settings = load_settings()
    client = connect(settings)
    exp = experiment_id(client, settings, "teleprompt-production", programs=["ticket_router"])
    experiment_id(client, settings, settings.pipeline_experiment)
    writes = []
    monkeypatch.setattr(client, "set_experiment_tag", lambda *a: writes.append(a))
    experiment_id(client, settings, "teleprompt-production", programs=["ticket_router"])
    experiment_id(client, settings, settings.pipeline_experiment)
    assert writes == []
    monkeypatch.undo()
    client.set_experiment_tag(exp, NOTE_TAG, "Support tickets from the EU help desk.")
    experiment_id(client, settings, "teleprompt-production", programs=["ticket_router"])
    assert _tags(client, exp)[NOTE_TAG] == "Support tickets from the EU help desk." and _tags(client, exp)["program"] == "ticket_router"


def test_runs_describing_one_experiment_at_once_do_not_collide(tmp_path):
    """Two `teleprompt run`s on one store tagged its experiment at once: MLflow's sqlite store inserts
    a tag it does not see yet, and the second insert failed its run (UNIQUE constraint, experiment_tags)."""
    import threading

    from mlflow import MlflowClient

    from teleprompt_assets.core.tracking import describe

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = MlflowClient(uri).get_experiment(MlflowClient(uri).create_experiment("x"))  # read before anyone tagged it
    errors: list[BaseException] = []

    def tag() -> None:
        try:
            describe(MlflowClient(uri), experiment, {"program": "ticket_router", "role": "production traces"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=tag) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and MlflowClient(uri).get_experiment(experiment.experiment_id).tags["program"] == "ticket_router"
