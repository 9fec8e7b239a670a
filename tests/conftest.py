"""Shared test set-up: every module in tests/fixtures/ is a pytest plugin.

Unit tests (tests/unit) need no servers; integration tests (tests/integration)
share one broker, one SparkSession, ... per test session through those fixtures.
"""
from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if p.stem != "__init__"
)

_INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items):
    """Every test under tests/integration needs real services: marked so (``-m "not integration"``: unit only)."""
    import pytest

    for item in items:
        if _INTEGRATION in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
