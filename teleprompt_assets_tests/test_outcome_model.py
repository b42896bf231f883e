import random

from teleprompt_assets.outcome_model import calibration, features, train
from teleprompt_assets.samples import outreach_traffic as ot


def _rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for p in ot.prospects(n, rng):
        reply = ot.sent_reply(p, rng)
        rows.append(({"prospect_message": p.prospect_message, "company": p.company}, reply, float(ot.outcomes(reply, p.company, rng)["reply_rate"])))
    return rows


def test_features_are_generic_text_properties():
    f = features({"company": "Acme Logistics", "prospect_message": "Need help"}, "Hi Acme Logistics, can we talk?")
    assert f[:5] == [1.0, 1.0, 1.0, 1.0, 0.0]


def test_learns_what_earns_replies_and_is_calibrated_out_of_sample():
    model = train(_rows(400, 1), "reply_rate")
    good = model.predict({"company": "Hooli Cloud", "prospect_message": "x"}, "Great to hear from Hooli Cloud. What is your main problem?")
    bad = model.predict({"company": "Hooli Cloud", "prospect_message": "x"}, "Thanks for your interest. Please find our brochure attached.")
    assert good > 0.5 > bad
    report = calibration(model, _rows(200, 2))
    assert report["brier"] < report["brier_of_constant"]
    assert abs(report["mean_predicted"] - report["mean_observed"]) < 0.1


def test_training_is_deterministic():
    assert train(_rows(100, 3), "reply_rate") == train(_rows(100, 3), "reply_rate")
