"""The Feast repo config, built from the settings, and the feature definitions it serves.

Registry, SQLite file and offline parquet live under ``<data>``; Redis by ``feast.online_store``. The
definitions come from ``<feast.repo_path>/definitions.py``, so one set of definitions serves every data dir.
"""
from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from feast import RepoConfig

from streamrec.config import Settings
from streamrec.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def repo_dir(settings: Settings) -> Path:
    """The feature repo; a relative ``feast.repo_path`` is taken from the source tree, not the cwd."""
    path = Path(settings.feast.repo_path).expanduser()
    path = path if path.is_absolute() else PROJECT_ROOT / path
    if not (path / "definitions.py").is_file():
        raise UserError(f"feature repo {path} has no definitions.py (setting feast.repo_path)")
    return path


@functools.cache
def definitions_module(path: Path) -> ModuleType:
    """The feature repo's ``definitions.py``, loaded once per path."""
    # Loaded by file path: the repo directory is Feast's, not an importable package.
    spec = importlib.util.spec_from_file_location("streamrec_feature_repo", path / "definitions.py")
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load {path / 'definitions.py'} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def repo_config(settings: Settings) -> RepoConfig:
    """Feast's config for ``settings``: the file registry, the online store chosen, DuckDB offline."""
    feast = settings.feast
    # feast.online_store is "sqlite" or "redis" (checked when the settings load)
    if feast.online_store == "sqlite":
        online = {"type": "sqlite", "path": str(settings.path("feast", "online.db"))}
    else:
        online = {"type": "redis", "connection_string": feast.redis_connection}
    return RepoConfig(
        project=definitions_module(repo_dir(settings)).PROJECT,
        provider="local",
        registry={"registry_type": "file", "path": str(settings.path("feast", "registry.db"))},
        online_store=online,
        # DuckDB, not Dask: the point-in-time joins of MovieLens-100k's training set take seconds, not minutes.
        offline_store={"type": "duckdb"},
        repo_path=str(repo_dir(settings)),
        entity_key_serialization_version=3,
    )
