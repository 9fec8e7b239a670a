"""One user removed from the feature store (``streamrec privacy delete-user``): every online row of the views
keyed by user, and every offline row of their sources (the session log, the profiles), each file rewritten
whole or not at all without the user's rows. The stream job drops its own state of the user when it reads the
deletion record (``features.stream_sink``), and a replay then folds none of the user's earlier events.
"""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis
from feast import FeatureView, FileSource
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _redis_key
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.online_stores.sqlite import _table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from features.store import FeatureStoreClient
from features.tables import write_parquet_atomic
from streams.storage import Location

EVERY_PARQUET = "/**/*.parquet"


def user_views(client: FeatureStoreClient) -> list[FeatureView]:
    """The views keyed by user (the session view's join key)."""
    key = client.defs.session_view.entity_columns[0].name
    return [v for v in client.defs.objects() if isinstance(v, FeatureView) and
            [c.name for c in v.entity_columns] == [key]]


def _entity(client: FeatureStoreClient, user_id: str) -> EntityKey:
    key = client.defs.session_view.entity_columns[0].name
    return EntityKey(join_keys=[key], entity_values=[Value(string_val=user_id)])


def forget_online(client: FeatureStoreClient, user_id: str) -> int:
    """Delete the user's online rows; returns how many views held them (Feast's SQLite store keeps a row per
    feature in a table per view; its Redis store one hash per user, a timestamp field per view in it)."""
    config = client.config
    entity = _entity(client, user_id)
    version = config.entity_key_serialization_version
    if client.settings.feast.online_store == "sqlite":
        removed = 0
        with contextlib.closing(sqlite3.connect(config.online_store.path)) as db, db:
            blob = serialize_entity_key(entity, entity_key_serialization_version=version)
            for view in user_views(client):
                try:
                    removed += db.execute(f"DELETE FROM {_table_id(config.project, view)} WHERE entity_key = ?",
                                          (blob,)).rowcount > 0
                except sqlite3.OperationalError:  # a view never written has no table
                    continue
        return removed
    nodes, kwargs = RedisOnlineStore._parse_connection_string(config.online_store.connection_string)
    key = _redis_key(config.project, entity, entity_key_serialization_version=version)
    with redis.Redis(host=nodes[0]["host"], port=nodes[0]["port"], **kwargs) as r, r.pipeline() as p:
        p.hkeys(key)
        p.delete(key)
        fields, _ = p.execute()
    return sum(f.startswith(b"_ts:") for f in fields)


def offline_files(client: FeatureStoreClient) -> list[Location]:
    """Every parquet file of the user views' offline sources."""
    files: list[Location] = []
    for view in user_views(client):
        if not isinstance(view.batch_source, FileSource):
            continue
        source = view.batch_source.path
        root = source[:-len(EVERY_PARQUET)] if source.endswith(EVERY_PARQUET) else source
        files += Location.of(root).glob("*.parquet") if source.endswith(EVERY_PARQUET) else [Location.of(root)]
    return [f for f in files if not f.name.startswith(".")]


def forget_offline(client: FeatureStoreClient, user_ids: Iterable[str]) -> int:
    """Rewrite every offline file holding the users' rows without them (one pass over the files, however many
    users); returns the rows removed."""
    key = client.defs.session_view.entity_columns[0].name
    users = pa.array(sorted(set(user_ids)), pa.string())
    removed = 0
    for file in offline_files(client) if len(users) else []:
        if not file.exists():
            continue
        table = pq.read_table(pq.BufferReader(file.read_bytes()) if file.local is None else file.local)
        mine = pc.is_in(table.column(key), value_set=users)
        n = pc.sum(mine).as_py() or 0
        if n:
            write_parquet_atomic(table.filter(pc.invert(mine)), file)
            removed += n
    return removed
