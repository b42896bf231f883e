import polars as pl

from teleprompt_assets.core.spec import load_project
from teleprompt_assets.curate import validation
from teleprompt_assets.ingest import traces

GOOD = "0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8"


def test_duplicate_ids_and_future_timestamps_are_quarantined():
    row = {"trace_id": "tr-1", "timestamp_ms": 1_000, "state": "OK", "experiment_id": "1", "program": "ticket_router", "contributor": GOOD,
           "inputs": '{"message": "hi"}', "outputs": '{"queue": "sales"}', "feedback": "{}", "expectations": '{"queue": "sales"}'}
    future = row | {"trace_id": "tr-2", "timestamp_ms": 10**15}
    spec = load_project("teleprompt.yaml")[1]["ticket_router"]
    curated, quarantined = validation.validate(traces.raw_frame([row, row, future]), spec, now_ms=2_000)
    assert curated.height == 1
    assert sorted(quarantined["reason"]) == ["duplicate_trace_id", "future_timestamp"]


def test_canonical_json_is_stable_and_order_free():
    row = {"trace_id": "t", "program": "p", "contributor": GOOD, "timestamp_ms": 5, "inputs": '{"b": 1, "a": "é"}',
           "outputs": '{"x": 1}', "feedback": '{"z": true, "y": 0.5}', "expectations": "{}"}
    swapped = row | {"inputs": '{"a": "é", "b": 1}', "feedback": '{"y": 0.5, "z": true}'}
    assert validation.canonical_json(row) == validation.canonical_json(swapped)
    assert validation.canonical_json(row) == '{"contributor":"0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8","expectations":{},"feedback":{"y":0.5,"z":true},"inputs":{"a":"é","b":1},"outputs":{"x":1},"program":"p","timestamp_ms":5,"trace_id":"t"}'.encode()  # noqa: E501
    assert isinstance(traces.raw_frame([]), pl.DataFrame)


def test_a_non_checksummed_contributor_is_not_corrected_in_the_detail():
    """For a mistyped address the corrected spelling is someone else's valid address: never suggest it."""
    row = {"trace_id": "tr-1", "timestamp_ms": 1_000, "state": "OK", "experiment_id": "1", "program": "ticket_router", "contributor": GOOD.lower(),
           "inputs": '{"message": "hi"}', "outputs": '{"queue": "sales"}', "feedback": "{}", "expectations": '{"queue": "sales"}'}
    spec = load_project("teleprompt.yaml")[1]["ticket_router"]
    _, quarantined = validation.validate(traces.raw_frame([row]), spec, now_ms=2_000)
    assert quarantined["reason"].to_list() == ["contributor_not_checksummed"]
    assert GOOD not in quarantined["detail"][0] and GOOD.lower() in quarantined["detail"][0]


# --- one list of reason codes (issue 14, item 9) ----------------------------------------------------

def _emitted_reasons() -> set[str]:
    """Reason literals as the rules emit them: ``(code, detail)`` tuples the contract check returns
    or picks, and the reason argument of the quality module's ``_quarantine`` / ``_cap`` calls."""
    import ast
    import inspect

    from teleprompt_assets.curate import quality

    found: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(validation))):
        picked = [node.value] if isinstance(node, ast.Return) else [node.body, node.orelse] if isinstance(node, ast.IfExp) else []
        for value in picked:
            if isinstance(value, ast.Tuple) and isinstance(value.elts[0], ast.Constant) and isinstance(value.elts[0].value, str):
                found.add(value.elts[0].value)
    position = {"_quarantine": 2, "_cap": 3}
    for node in ast.walk(ast.parse(inspect.getsource(quality))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in position:
            arg = node.args[position[node.func.id]]
            if isinstance(arg, ast.Constant):
                found.add(arg.value)
    return found


def _documented_reasons() -> list[str]:
    """Codes in the first column of docs/data-quality.md's reason-code tables (``a / b`` cells hold two)."""
    from teleprompt_assets_tests.conftest import REPO

    text = (REPO / "docs" / "data-quality.md").read_text()
    section = text[text.index("## Reason codes"):]
    section = section[:section.find("\n## ", 1)]
    codes = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith(("| code ", "|---")):
            codes += [c.strip() for c in line.split("|")[1].split("/")]
    return codes


def test_the_reason_code_list_is_exactly_what_the_rules_emit():
    from teleprompt_assets.curate.quality import reason_codes

    assert _emitted_reasons() == set(reason_codes())


def test_the_docs_list_every_reason_code_once():
    from teleprompt_assets.curate.quality import reason_codes

    documented = _documented_reasons()
    assert len(documented) == len(set(documented)), documented
    assert set(documented) == set(reason_codes())


def test_the_readme_links_to_the_list_instead_of_repeating_it():
    from teleprompt_assets.curate.quality import reason_codes
    from teleprompt_assets_tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    assert "docs/data-quality.md#reason-codes" in readme
    assert [c for c in reason_codes() if f"`{c}`" in readme] == ["future_timestamp"]  # named once, as an example
