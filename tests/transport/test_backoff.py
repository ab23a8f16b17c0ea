"""Reconnect backoff: full jitter inside the cap, the first retries within a second."""

from __future__ import annotations

import random

import pytest

from plumbing.backoff import Backoff


def test_schedule_bounds_double_up_to_the_cap_and_never_past_it() -> None:
    b = Backoff(0.5, 30.0, rand=lambda: 1.0)  # the largest draw full jitter can make
    delays = [b.next() for _ in range(12)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0]


def test_full_jitter_draws_between_zero_and_the_bound() -> None:
    rng = random.Random(7)
    b = Backoff(0.5, 30.0, rand=rng.random)
    for attempt in range(200):
        d = b.next()
        assert 0.0 <= d <= b.bound(attempt) <= 30.0
    assert b.bound(0) <= 1.0 and b.bound(1) <= 1.0  # first retries within a second
    assert Backoff(0.5, 30.0, rand=lambda: 0.0).next() == 0.0


def test_reset_starts_the_schedule_again_and_a_huge_attempt_stays_capped() -> None:
    b = Backoff(0.5, 30.0, rand=lambda: 1.0)
    for _ in range(2000):
        b.next()
    assert b.next() == 30.0
    b.reset()
    assert b.next() == 0.5


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_parameters_are_refused(initial: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial, cap)
