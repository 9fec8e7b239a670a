"""Shared test set-up: every module in tests/fixtures/ is a pytest plugin.

Unit tests (tests/unit) need no servers; integration tests (tests/integration)
share one broker, one SparkSession, ... per test session through those fixtures.
"""
from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if p.stem != "__init__"
)
