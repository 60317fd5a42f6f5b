"""How many examples a property-based (hypothesis) test runs: its bounded count in `make test`, times
FUZZ_SCALE (`make fuzz` sets 20) for a longer search. Not a test module."""

import os


def examples(bounded: int) -> int:
    """`bounded` examples, scaled by the FUZZ_SCALE environment variable (default 1)."""
    return bounded * max(1, int(os.environ.get("FUZZ_SCALE", "1")))
