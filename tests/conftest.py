"""Shared test set-up: every module in tests/fixtures/ is a pytest plugin.

Unit tests (tests/unit) need no servers; integration tests (tests/integration)
share one broker, one SparkSession, ... per test session through those fixtures.
"""
from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if p.stem != "__init__"
)

_INTEGRATION = Path(__file__).parent / "integration"
_FAULTS = Path(__file__).parent / "faults"
_BROWSER = Path(__file__).parent / "browser"


def pytest_collection_modifyitems(items):
    """Every test under tests/integration, tests/faults and tests/browser needs real services: marked
    ``integration`` (``-m "not integration"``: unit only); the fault suite also ``faults``, the web page's
    end-to-end test also ``browser``."""
    import pytest

    for item in items:
        parents = Path(item.fspath).parents
        if _INTEGRATION in parents or _FAULTS in parents or _BROWSER in parents:
            item.add_marker(pytest.mark.integration)
        if _FAULTS in parents:
            item.add_marker(pytest.mark.faults)
        if _BROWSER in parents:
            item.add_marker(pytest.mark.browser)
