"""Rate control of `prosemc send`: rates, deadlines, confidences, the link cache."""

from __future__ import annotations

import pytest

from prosemc.errors import InputError
from prosemc.serve.plan import LinkCache, measured_rate, parse_rate, plan_layers, wire_bytes

LAYERS = [600, 700, 900, 900, 900, 900]


@pytest.mark.parametrize("text, rate", [("1mbit", 1e6), ("1Mbps", 1e6), ("250kbit", 2.5e5), ("2e6", 2e6),
                                        ("auto", None), (" 1.5 m ", 1.5e6)])
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "0", "-1mbit", "5gbit/x"])
def test_bad_rates_are_refused_with_the_fix(text):
    with pytest.raises(InputError, match="e.g. 1mbit"):
        parse_rate(text)


def test_no_limits_send_everything():
    plan = plan_layers(250, LAYERS, remaining_s=None, bandwidth_bps=None, rtt_s=0.2, answer_s=1.0)
    assert (plan.layers, plan.reason, plan.server_deadline_s) == (6, "all", None)


def test_deadline_keeps_the_largest_prefix_that_arrives_in_time():
    # 1 s left, 0.2 s answer, 0.2 s round trip: 0.6 s of upload at 50 kbit/s = 3750 bytes on the wire
    plan = plan_layers(250, LAYERS, remaining_s=1.0, bandwidth_bps=50e3, rtt_s=0.2, answer_s=0.2)
    assert plan.reason == "deadline" and plan.server_deadline_s == pytest.approx(0.6)
    assert wire_bytes(250, LAYERS, plan.layers) * 8 / 50e3 <= 0.6 < wire_bytes(250, LAYERS, plan.layers + 1) * 8 / 50e3


def test_an_impossible_deadline_still_sends_layer_one():
    plan = plan_layers(250, LAYERS, remaining_s=0.1, bandwidth_bps=1e6, rtt_s=0.2, answer_s=1.0)
    assert (plan.layers, plan.reason, plan.server_deadline_s) == (1, "deadline-miss", 0.0)


def test_confidence_stops_at_the_first_estimate_that_reaches_it_and_the_deadline_can_cut_further():
    estimates = [0.5, 0.8, 0.93, 0.98, 0.99, 1.0]
    plan = plan_layers(250, LAYERS, remaining_s=None, bandwidth_bps=None, rtt_s=0.2, answer_s=1, estimates=estimates,
                       confidence=0.9)
    assert (plan.layers, plan.reason) == (3, "confidence")
    tight = plan_layers(250, LAYERS, remaining_s=0.5, bandwidth_bps=50e3, rtt_s=0.1, answer_s=0.1,
                        estimates=estimates, confidence=0.9)
    assert tight.layers < 3 and tight.reason == "deadline"
    never = plan_layers(250, LAYERS, remaining_s=None, bandwidth_bps=None, rtt_s=0.2, answer_s=1, estimates=estimates,
                        confidence=1.1)
    assert never.layers == 6


def test_measured_rate_and_the_link_cache(tmp_path):
    assert measured_rate([1000, 3000, 6000], [0.0, 20.0, 40.0]) == pytest.approx(5000 * 8 / 0.04)
    assert measured_rate([1000, 3000], [0.0, 1.0]) is None  # too close together to tell
    cache = LinkCache(tmp_path / "links.json")
    assert cache.get("cloud:8000") is None
    cache.put("cloud:8000", 987654.3)
    assert LinkCache(tmp_path / "links.json").get("cloud:8000") == 987654
    (tmp_path / "links.json").write_text("not json")
    assert cache.get("cloud:8000") is None
