"""Feast definitions for streamrec: two entities, three feature views, one feature service.

``build(offline_dir)`` makes every object with its file sources under
``offline_dir``; ``features.store`` calls it with ``<data>/offline`` from the
settings, so tests and production apply the same definitions to different places.
The module-level objects below serve the ``feast`` CLI run in this directory
(``feature_store.yaml``): their relative paths resolve against this directory,
i.e. to the embedded default data dir ``var/``.

``user_session_features`` is a plain FeatureView over a PushSource, not a
StreamFeatureView: the stream job folds events itself and pushes finished rows;
a StreamFeatureView adds Feast-side UDFs and aggregations we do not use and is
still marked alpha (it warns on every construction).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float32, Int64, String

from streamrec.vocabulary import GENRE_SLUGS

PROJECT = "streamrec"
PUSH_SOURCE = "user_session_push"
SESSION_VIEW = "user_session_features"
ITEM_VIEW = "item_features"
PROFILE_VIEW = "user_profile"
TIMESTAMP = "event_timestamp"

# Where each source's parquet lives, relative to the offline dir. A directory source is read through a glob
# (Feast's DuckDB offline store reads files and globs; temp files end in .tmp, so half-written ones are skipped).
SESSION_LOG_DIR = "user_session"
ITEMS_FILE = "items/items.parquet"
PROFILE_DIR = "user_profile"
EVERY_PARQUET = "**/*.parquet"

SESSION_FIELDS: list[Field] = (
    [Field(name=f"aff_{slug}", dtype=Float32) for slug in GENRE_SLUGS]
    + [
        Field(name="watch_time_decayed", dtype=Float32),
        Field(name="clicks_decayed", dtype=Float32),
        Field(name="watches_decayed", dtype=Float32),
        Field(name="events_total", dtype=Int64),
        Field(name="session_id", dtype=String),
        Field(name="session_events", dtype=Int64),
        Field(name="session_length_s", dtype=Float32),
        Field(name="last_device", dtype=String),
        Field(name="local_hour", dtype=Int64),
        Field(name="daypart", dtype=String),
        Field(name="is_weekend", dtype=Int64),
        Field(name="last_items", dtype=Array(String)),
        Field(name="last_event_ts_ms", dtype=Int64),
        Field(name="prev_gap_s", dtype=Float32),
        # The live retrieval vector (features.user_vector) and the version of the item factors it was folded on.
        Field(name="user_vector", dtype=Array(Float32)),
        Field(name="user_vector_model", dtype=String),
    ]
)

ITEM_FIELDS: list[Field] = [
    Field(name="title", dtype=String),
    Field(name="genres", dtype=Array(String)),
    Field(name="year", dtype=Int64),
    Field(name="duration_minutes", dtype=Float32),
    Field(name="popularity", dtype=Float32),
]

PROFILE_FIELDS: list[Field] = [
    Field(name="profile_events", dtype=Int64),
    Field(name="profile_top_genre", dtype=String),
] + [Field(name=f"share_{slug}", dtype=Float32) for slug in GENRE_SLUGS]


@dataclass(frozen=True)
class Definitions:
    user: Entity
    item: Entity
    session_push: PushSource
    session_view: FeatureView
    item_view: FeatureView
    profile_view: FeatureView
    ranking: FeatureService

    def objects(self) -> list:
        """Everything ``FeatureStore.apply`` needs (sources ride along with their views)."""
        return [self.user, self.item, self.session_push, self.session_view, self.item_view, self.profile_view, self.ranking]


def build(offline_dir: str) -> Definitions:
    base = offline_dir.rstrip("/")
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="a viewer")
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="a catalog title")
    session_log = FileSource(
        name="user_session_log",
        path=f"{base}/{SESSION_LOG_DIR}/{EVERY_PARQUET}",
        file_format=ParquetFormat(),
        timestamp_field=TIMESTAMP,
        description="every pushed session row, partitioned date=YYYY-MM-DD/batch-<id>.parquet",
    )
    session_push = PushSource(name=PUSH_SOURCE, batch_source=session_log)
    session_view = FeatureView(
        name=SESSION_VIEW,
        entities=[user],
        ttl=timedelta(days=30),
        schema=[Field(name="user_id", dtype=String), *SESSION_FIELDS],
        source=session_push,
        online=True,
        description="live session state folded from the event stream",
    )
    item_view = FeatureView(
        name=ITEM_VIEW,
        entities=[item],
        # Catalog attributes are stamped at the epoch and never expire, so every label finds them.
        ttl=timedelta(0),
        schema=[Field(name="item_id", dtype=String), *ITEM_FIELDS],
        source=FileSource(name="item_catalog", path=f"{base}/{ITEMS_FILE}", file_format=ParquetFormat(),
                          timestamp_field=TIMESTAMP),
        online=True,
    )
    profile_view = FeatureView(
        name=PROFILE_VIEW,
        entities=[user],
        ttl=timedelta(0),
        schema=[Field(name="user_id", dtype=String), *PROFILE_FIELDS],
        source=FileSource(name="user_profiles", path=f"{base}/{PROFILE_DIR}/{EVERY_PARQUET}",
                          file_format=ParquetFormat(), timestamp_field=TIMESTAMP),
        online=True,
        description="long-term profile computed offline, stamped with its cut time",
    )
    ranking = FeatureService(name="ranking", features=[session_view, profile_view, item_view])
    return Definitions(user, item, session_push, session_view, item_view, profile_view, ranking)


# For the `feast` CLI only (see the module docstring).
_default = build("../var/offline")
if __name__ == "definitions":  # imported by `feast apply`, which runs in this directory
    # Feast makes the registry's directory but not its parents; a fresh clone has no var/ yet.
    Path(__file__).resolve().parent.parent.joinpath("var", "feast").mkdir(parents=True, exist_ok=True)
user, item = _default.user, _default.item
user_session_push, user_session_features = _default.session_push, _default.session_view
item_features, user_profile, ranking = _default.item_view, _default.profile_view, _default.ranking
