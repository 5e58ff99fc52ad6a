"""Options of the simulation suite: how many seeds to sweep, or one seed to replay.

pytest tests/sim -k seed --sim-seeds=1000     # a longer sweep (make sim SEEDS=1000)
pytest tests/sim -k seed --sim-seed=1234      # replay one schedule exactly
pytest tests/sim -k seed --sim-seed=7 --sim-profile=everything
"""

from __future__ import annotations

import pytest

DEFAULT_SEEDS = 60


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sim", "deterministic simulation testing")
    group.addoption(
        "--sim-seeds",
        type=int,
        default=None,
        help=f"schedules in the seed sweep (default {DEFAULT_SEEDS})",
    )
    group.addoption("--sim-seed", type=int, default=None, help="run this one seed only")
    group.addoption(
        "--sim-profile",
        default=None,
        help="fault profile for every seed (default: the seed picks one of the sweep's)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" not in metafunc.fixturenames:
        return
    config = metafunc.config
    one = config.getoption("--sim-seed", default=None)
    count = config.getoption("--sim-seeds", default=None)
    seeds = [one] if one is not None else list(range(DEFAULT_SEEDS if count is None else count))
    metafunc.parametrize("sim_seed", seeds, ids=[f"seed={s}" for s in seeds])


@pytest.fixture
def sim_profile(request: pytest.FixtureRequest) -> str | None:
    value = request.config.getoption("--sim-profile", default=None)
    return str(value) if value else None
