"""Counter wrap, reboot and 64/32-bit fallback give correct (or no) rates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.counters import MOD32, Sample, delta, rate, rates, rebooted


def test_plain_rate() -> None:
    assert rate(Sample(1000, 64, 100.0, 50), Sample(7000, 64, 160.0, 110)) == 100.0


def test_32bit_wrap() -> None:
    prev = Sample(MOD32 - 600, 32, 0.0, 10)
    cur = Sample(5400, 32, 60.0, 70)
    assert rate(prev, cur) == 100.0  # (600 + 5400) / 60


def test_64bit_going_down_is_a_reset_not_a_wrap() -> None:
    assert delta(10_000, 5, 64) is None
    assert rate(Sample(10_000, 64, 0.0, 10), Sample(5, 64, 60.0, 70)) is None


def test_reboot_gives_no_rate_even_if_counter_rose() -> None:
    # uptime went from 1000 s to 30 s: the counter restarted and grew past the old value
    prev = Sample(100, 64, 0.0, 1000.0)
    cur = Sample(5000, 64, 60.0, 30.0)
    assert rebooted(1000.0, 30.0, 60.0)
    assert rate(prev, cur) is None


def test_uptime_wrap_is_not_a_reboot() -> None:
    top = MOD32 / 100
    assert not rebooted(top - 20, 40, 60)
    assert rate(Sample(0, 64, 0.0, top - 20), Sample(600, 64, 60.0, 40)) == 10.0


def test_fallback_switch_is_a_discontinuity() -> None:
    assert rate(Sample(2**40, 64, 0.0), Sample(5, 32, 60.0)) is None


def test_implausible_wrap_rejected_by_speed_cap() -> None:
    # a 32-bit counter reset looks like a wrap of ~4 GB in 60 s on a 10 Mb/s link
    prev, cur = Sample(1000, 32, 0.0, 10), Sample(10, 32, 60.0, 70)
    assert rate(prev, cur) is not None
    assert rate(prev, cur, max_per_s=10_000_000 / 8 * 1.5) is None


def test_rates_on_record_fields() -> None:
    out = rates({"in_octets": 100, "out_octets": None}, {"in_octets": 700, "out_octets": 5},
                ["in_octets", "out_octets"], prev_ts=0, cur_ts=60, bits=64)
    assert out == {"in_octets_per_s": 10.0, "out_octets_per_s": None}


def test_bad_width() -> None:
    with pytest.raises(ValueError, match="32 or 64"):
        delta(1, 2, 16)


@given(st.integers(0, MOD32 - 1), st.integers(0, MOD32 - 1))
def test_32bit_delta_is_modular(a: int, inc: int) -> None:
    b = (a + inc) % MOD32
    assert delta(a, b, 32) == inc
