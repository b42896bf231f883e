"""The contributor game (benchmarks/reward_game.py) at the size the suite affords: every strategy's
reward against an honest party's with the same true data, through the product's own curation,
label check, compile, leave-one-out impact and weights, with the offline LM."""

from __future__ import annotations

import pytest

from benchmarks.reward_game import PARTIES, play


@pytest.fixture(scope="module")
def game():
    return play(per_party=40, seed=0)


def test_honest_parties_with_equivalent_data_earn_within_ten_percent(game):
    assert game.honest_spread() <= 0.10


def test_every_strategy_stays_under_its_target(game):
    ratios = game.ratios()
    mean_honest = sum(game.reward(p) for p in PARTIES if p.startswith("honest")) / 4
    rounding = 1 + 5 / mean_honest  # largest remainder: at most one ppm per address
    assert ratios["noisy"] <= 0.7
    assert ratios["flooder"] <= 1.0 * rounding
    assert ratios["copycat"] <= 0.05
    assert ratios["sybil"] <= 1.05
    assert ratios["flipper"] <= 0.5
    assert game.line().startswith("game: honest spread ")


def test_what_the_strategies_did_is_visible(game):
    assert game.flagged["noisy"] > 0 and game.flagged["flipper"] > 0
    assert all(game.flagged[p] == 0 for p in PARTIES if p.startswith("honest"))
    assert game.rows["copycat"] == 0  # every copy collapsed to its first submitter
    assert game.rows["flooder"] == game.rows["honest_1"]  # duplicates add no rows
    assert sum(game.weights.values()) == 1_000_000


def test_the_game_is_deterministic(game):
    assert play(per_party=40, seed=0).weights == game.weights
