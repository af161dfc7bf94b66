"""Shared test configuration.

Hypothesis profiles (tests/test_properties.py): "dev" is the default (100 examples per
property); "ci" runs 2,000 examples per property, derandomized (the seed comes from each
test's name), so a failure in CI reproduces with the same command.  Select one with the
HYPOTHESIS_PROFILE environment variable, e.g. ``HYPOTHESIS_PROFILE=ci python -m pytest``.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=2000,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
