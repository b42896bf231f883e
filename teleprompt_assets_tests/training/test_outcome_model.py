import random

from teleprompt_assets.samples import outreach_traffic as ot
from teleprompt_assets.training.outcome_model import Fit, calibration, text_feature_names, text_features, train

INPUTS = ("prospect_message", "company")


def _rows(n, seed, tone=False):
    rng = random.Random(seed)
    rows = []
    for p in ot.prospects(n, rng):
        reply = ot.sent_reply(p, rng)
        outputs = {"reply": reply} | ({"tone": "warm" if "?" in reply else "cold"} if tone else {})
        rows.append(({"prospect_message": p.prospect_message, "company": p.company}, outputs, float(ot.outcomes(reply, p.company, rng)["reply_rate"])))
    return rows


def test_text_features_are_documented_properties_per_input():
    assert text_feature_names("reply", INPUTS) == (
        "reply:repeats_prospect_message", "reply:repeats_company", "reply:asks_question", "reply:short", "reply:long", "reply:input_word_share")
    f = text_features(INPUTS, {"company": "Acme Logistics", "prospect_message": "Need help"}, "Hi Acme Logistics, can we talk?")
    assert f[:5] == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_each_field_gets_the_features_of_its_kind():
    model = train(_rows(200, 1, tone=True), "reply_rate", INPUTS, ("tone", "reply", "never_logged"))
    kinds = {f.name: (f.kind, f.values) for f in model.fields}
    assert kinds == {"tone": ("categorical", ("cold", "warm")), "reply": ("text", ()), "never_logged": ("absent", ())}
    assert model.feature_names[:4] == ("bias", "tone=cold", "tone=warm", "tone:fits_inputs")
    assert model.feature_names[4:] == text_feature_names("reply", INPUTS)
    reads = list(INPUTS)
    assert model.describe()["fields"] == {"tone": {"kind": "categorical", "reads": reads, "values": ["cold", "warm"]}, "reply": {"kind": "text", "reads": reads},
                                          "never_logged": {"kind": "absent", "reads": reads}}
    unseen = model.predict({"company": "Hooli", "prospect_message": "x"}, {"tone": "lukewarm", "reply": "Hi Hooli"})
    assert 0.0 <= unseen <= 1.0


def test_learns_what_earns_replies_and_is_calibrated_out_of_sample():
    model = train(_rows(400, 1), "reply_rate", INPUTS, ("reply",))
    good = model.predict({"company": "Hooli Cloud", "prospect_message": "x"}, {"reply": "Great to hear from Hooli Cloud. What is your main problem?"})
    bad = model.predict({"company": "Hooli Cloud", "prospect_message": "x"}, {"reply": "Thanks for your interest. Please find our brochure attached."})
    assert good > 0.5 > bad
    report = calibration(model, _rows(200, 2))
    assert report["brier"] < report["brier_of_constant"]
    assert abs(report["mean_predicted"] - report["mean_observed"]) < 0.1


def test_a_field_is_judged_against_the_inputs_its_step_reads():
    model = train(_rows(100, 5, tone=True), "reply_rate", INPUTS, ("tone", "reply"), reads={"tone": ("prospect_message",)})
    assert model.feature_names[-6:-4] == ("reply:repeats_prospect_message", "reply:repeats_company")
    assert {f.name: f.reads for f in model.fields} == {"tone": ("prospect_message",), "reply": INPUTS}


def test_fits_inputs_leaves_a_train_trace_out_of_its_own_evidence():
    fit = Fit.count(("refund", "shipping"), [(["refund", "please"], "refund", 1.0), (["parcel", "late"], "shipping", 1.0), (["refund"], "refund", 0.0)])
    assert fit.weight == (1.0, 1.0) and fit.vocabulary == 4
    assert fit.probability(["refund", "please"], "refund") > 0.7
    assert fit.probability(["refund", "please"], "refund", own="refund", own_weight=1.0) < 0.5
    assert fit.probability(["refund"], "cancel") == 0.0


def test_training_is_deterministic():
    assert train(_rows(100, 3, tone=True), "reply_rate", INPUTS, ("tone", "reply")) == train(_rows(100, 3, tone=True), "reply_rate", INPUTS, ("tone", "reply"))


def test_scores_stay_in_the_unit_interval():
    model = train(_rows(200, 4, tone=True), "reply_rate", INPUTS, ("tone", "reply"))
    for outputs in ({"tone": "warm", "reply": "Hooli? " * 200}, {}, {"tone": "", "reply": ""}):
        assert 0.0 <= model.predict({"company": "Hooli", "prospect_message": "Hooli " * 100}, outputs) <= 1.0
