"""burn_rate (obslab.detect.burn): SLO error-budget burn over both a short and a long span."""

from datetime import timedelta

import pytest

from obslab.detect.burn import burn_rate
from obslab.detect.config import DetectorConfig
from tests.detect.helpers import CFG, T0, windows


def test_burn_rate_needs_both_windows_burning():
    sustained = windows(n=120, at={m: {"error_rate": 0.25} for m in range(40, 120)})
    found = burn_rate(sustained, CFG)
    first = (found[0].window_start - T0) / timedelta(minutes=1)
    assert 40 < first < 120  # the long window needs time to catch up
    short = windows(n=120, at={m: {"error_rate": 0.25} for m in range(100, 103)})
    assert burn_rate(short, CFG) == []  # a three-minute blip does not burn the hour's budget


@pytest.mark.parametrize("default_slo, burns", [
    (0.99, True),   # 25 % errors spend a 1 % budget 25 times as fast as allowed: above 14.4
    (0.9, False),   # the same errors against a 10 % budget burn 2.5: below 14.4
])
def test_burn_rate_holds_an_unconfigured_service_to_the_default_slo(default_slo, burns):
    sustained = windows(n=120, service="inventory", at={m: {"error_rate": 0.25} for m in range(40, 120)})
    found = burn_rate(sustained, DetectorConfig(default_slo_availability=default_slo))
    assert bool(found) == burns
