"""Window and Anomaly (obslab.detect.window): the severity rule every anomaly is graded by."""

import pytest

from obslab.detect.window import severity


@pytest.mark.parametrize("ratio, level", [(1.2, "medium"), (2.0, "high"), (3.0, "critical"), (10, "critical")])
def test_severity_rule(ratio, level):
    assert severity(ratio) == level
