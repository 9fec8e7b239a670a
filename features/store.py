"""The feature-store client: one object over Feast for the stream job, serving and training.

Its Feast config and definitions come from ``features.feast_repo``. Offline layout under ``<data>/offline``::

    user_session/date=YYYY-MM-DD/batch-<id>.parquet   every pushed session row
    items/items.parquet                                the catalog, stamped at the epoch
    user_profile/profile-<cut ms>.parquet              one file per profile cut

The session log may live elsewhere (``feast.offline_log_uri``: a path or URI, written and listed through
``streams.storage``); Feast's DuckDB store reads it there.
"""
from __future__ import annotations

import functools
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis
from feast import FeatureStore, FeatureView, FileSource
from feast.errors import FeatureViewNotFoundException
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.provider import get_provider
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type
from feast.types import Int64

from features.feast_repo import definitions_module, repo_config, repo_dir
from features.online_write import RedisRowWriter
from features.profiles import user_profiles
from features.tables import arrow_schema, latest_per_key, to_frame, to_table, write_parquet_atomic
from streamrec.catalog import catalog_frame, load_items
from streamrec.config import Settings
from streamrec.errors import UserError
from streams.storage import Location

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The offline parquet's time resolution: "strictly before t" is "at or before t - TICK".
TICK = pd.Timedelta(microseconds=1)
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class FeatureStoreClient:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.offline_dir = settings.data_path / "offline"
        self._module = definitions_module(repo_dir(settings))
        self.defs = self._module.build(str(self.offline_dir))
        if settings.feast.offline_log_uri:  # the definitions put every source under the offline dir
            log_source = self.defs.session_view.batch_source
            assert isinstance(log_source, FileSource)  # the push source's batch source, shared by the view
            log_source.file_options.uri = f"{self.session_log_dir.for_readers}/{self._module.EVERY_PARQUET}"
        self.config = repo_config(settings)
        self.store = FeatureStore(config=self.config)
        self._session_schema = arrow_schema(self.defs.session_view)
        self._redis_rows: RedisRowWriter | None = None

    # ---- registry ----
    def apply(self) -> None:
        """Register the definitions and create their online tables; re-running changes nothing."""
        self.store.apply(self.defs.objects())

    # ---- the stream job's sink ----
    def write_session_features(self, df: pd.DataFrame, batch_id: int | str) -> int:
        """Store one micro-batch of session rows: the offline log, then the online store.

        Safe to replay: the offline files of ``batch_id`` are replaced, not added to,
        and online a row replaces a user's state only if it is not older. Returns the
        number of user rows sent to the online store.
        """
        batch = str(batch_id)
        if not _BATCH_ID.match(batch):
            raise ValueError(f"batch id {batch_id!r}: use letters, digits, '_' or '-'")
        if df.empty:
            return 0
        table = to_table(df, self._session_schema, "session rows")
        self.log_offline(table, batch)
        return self._write_online(self.defs.session_view, to_frame(table))

    def write_session_online(self, columns: Mapping[str, Sequence]) -> None:
        """The stream job's online write: every row replaces the user's row, whatever its timestamp.

        The job's state store orders updates, so a late event or a second event in the same
        millisecond must still land (Feast's own Redis write skips a row whose timestamp is not
        newer than the stored one). Redis: one pipelined round trip (``features.online_write``);
        SQLite: Feast's writer, which overwrites too.
        """
        view = self.defs.session_view
        if self.config.online_store.type == "redis":
            if self._redis_rows is None:
                self._redis_rows = RedisRowWriter(self.config, view)
            self._redis_rows.write(columns["user_id"], columns["last_event_ts_ms"], {f.name: columns[f.name] for f in view.features})
        else:
            self.store.write_to_online_store(view.name, pd.DataFrame(columns))

    def log_session_offline(self, columns: Mapping[str, Sequence], batch_id: int | str) -> None:
        """The offline log of the stream job's batch ``batch_id`` (replaced when the batch is replayed)."""
        batch = str(batch_id)
        if not _BATCH_ID.match(batch):
            raise ValueError(f"batch id {batch_id!r}: use letters, digits, '_' or '-'")
        self.log_offline(pa.Table.from_pydict(dict(columns), schema=self._session_schema), batch)

    @property
    def session_log_dir(self) -> Location:
        """The offline session log: ``date=YYYY-MM-DD/batch-<id>.parquet`` under it."""
        where = self.settings.feast.offline_log_uri or self.offline_dir / self._module.SESSION_LOG_DIR
        return Location.of(where, "feast.offline_log_uri")

    def log_offline(self, table: pa.Table, batch: str) -> None:
        log_dir = self.session_log_dir
        days = table.column("event_timestamp").to_pandas().dt.strftime("%Y-%m-%d")
        written = set()
        for day in sorted(days.unique()):
            file = log_dir / f"date={day}" / f"batch-{batch}.parquet"
            write_parquet_atomic(table.filter(pa.array((days == day).to_numpy())), file)
            written.add(file.path)
        # A replay whose rows fall on other days must not leave the first attempt's files behind.
        for stale in log_dir.glob(f"date=*/batch-{batch}.parquet"):
            if stale.path not in written:
                stale.unlink(missing_ok=True)

    def _write_online(self, view: FeatureView, df: pd.DataFrame) -> int:
        key = view.entity_columns[0].name
        df = latest_per_key(df, key)
        if self.settings.feast.online_store == "sqlite":
            # Feast's Redis store skips a row older than the stored one; its SQLite store
            # overwrites unconditionally, so drop such rows here.
            stored = self._sqlite_stamps(view, key, df[key])
            df = df[stored.isna() | (df["event_timestamp"].dt.floor("s") >= stored)]
        if not df.empty:
            self.store.write_to_online_store(view.name, df)
        return len(df)

    def _sqlite_stamps(self, view: FeatureView, key: str, values: pd.Series) -> pd.Series:
        """The stored event time per key (NaT if none), read straight from Feast's table.

        Feast's own online_read parses every feature of every key (1.4 s per 1,000 users
        here); one indexed row per key is enough, since a write stamps all of them alike.
        Feast keeps whole seconds (its sqlite3 adapter stores int(naive_utc.timestamp()),
        read back with fromtimestamp), so within one second the last write wins.
        """
        config = self.config
        table = compute_table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
        blobs = [
            serialize_entity_key(EntityKey(join_keys=[key], entity_values=[Value(string_val=str(v))]),
                                 config.entity_key_serialization_version)
            for v in values
        ]
        found: dict[bytes, int] = {}
        with closing(sqlite3.connect(config.online_store.path)) as conn:
            for start in range(0, len(blobs), 5000):  # under SQLite's bound-variable limit
                chunk = blobs[start:start + 5000]
                try:
                    found.update(conn.execute(
                        f'SELECT entity_key, event_ts FROM "{table}" WHERE feature_name = ? '
                        f"AND entity_key IN ({','.join('?' * len(chunk))})",
                        [view.features[0].name, *chunk],
                    ).fetchall())
                except sqlite3.OperationalError as e:
                    raise UserError(f"online store {config.online_store.path}: {e}; run `streamrec features apply` first") from None
        naive_utc = [datetime.fromtimestamp(found[b]) if b in found else None for b in blobs]
        return pd.Series(pd.to_datetime(naive_utc).tz_localize("UTC"), index=values.index)

    # ---- online reads ----
    @contextmanager
    def _answering(self) -> Iterator[None]:
        """For the batch commands (load, profiles, a look at features): an online store that does not answer is
        the operator's to fix, said in one line. The stream job and the API handle it themselves (retry, flag)."""
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            raise UserError(f"the online store (Redis at {self.settings.feast.redis_connection}) does not answer: "
                            f"{e} (`streamrec infra up` starts the embedded one)") from None

    def online_features(self, user_ids: Iterable[str]) -> list[dict]:
        """Live session features per user, in order; a user never seen has every feature None."""
        with self._answering():
            return self._online(self.defs.session_view, user_ids)

    def profile_features(self, user_ids: Iterable[str]) -> list[dict]:
        return self._online(self.defs.profile_view, user_ids)

    def item_features(self, item_ids: Iterable[str]) -> list[dict]:
        return self._online(self.defs.item_view, item_ids)

    def user_features(self, user_id: str) -> tuple[dict, dict]:
        """One user's session row and profile row (every feature None when absent): what a request reads.

        Through the online store's own read (Feast's ``OnlineStore.online_read``, any backend), not
        ``get_online_features``, whose registry lookups and response building are half of a ~1.5 ms read."""
        join_key = self.defs.session_view.entity_columns[0].name  # the profile view's too
        key = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=str(user_id))])
        rows = []
        for view in self._request_views:
            ((_, values),) = self._online_store.online_read(self.config, view, [key], None)
            values = values or {}
            rows.append({join_key: user_id, **{f.name: feast_value_type_to_python_type(values[f.name])
                                                if f.name in values else None for f in view.features}})
        return rows[0], rows[1]

    @functools.cached_property
    def _online_store(self):
        return get_provider(self.config).online_store

    @functools.cached_property
    def _request_views(self) -> tuple[FeatureView, FeatureView]:
        """The registered session and profile views, read once (the API restarts after `features apply`)."""
        try:
            return (self.store.get_feature_view(self.defs.session_view.name),
                    self.store.get_feature_view(self.defs.profile_view.name))
        except FeatureViewNotFoundException as e:
            raise UserError(f"{e}: not registered in {self.config.registry.path}; run `streamrec features apply`") from None

    def _online(self, view: FeatureView, ids: Iterable[str]) -> list[dict]:
        key = view.entity_columns[0].name
        ids = [str(i) for i in ids]
        if not ids:
            return []
        refs = [f"{view.name}:{f.name}" for f in view.features]
        try:
            columns = self.store.get_online_features(features=refs, entity_rows=[{key: i} for i in ids]).to_dict()
        except FeatureViewNotFoundException:
            raise UserError(f"{view.name} is not registered in {self.config.registry.path}; run `streamrec features apply`") from None
        return [{name: values[n] for name, values in columns.items()} for n in range(len(ids))]

    # ---- batch sources ----
    def load_catalog(self, items_jsonl: str | os.PathLike) -> int:
        """Write the catalog's item parquet and put the same rows online; returns the item count."""
        items = catalog_frame(load_items(items_jsonl)).assign(event_timestamp=EPOCH)
        table = to_table(items, arrow_schema(self.defs.item_view), f"catalog {items_jsonl}")
        write_parquet_atomic(table, self.offline_dir / self._module.ITEMS_FILE)
        # The rows `feast materialize` would copy, without a pass over the parquet. Online they
        # are stamped now, not at the epoch: Redis ignores a write no newer than what it holds,
        # and a reloaded catalog must replace the old one.
        online = to_frame(table).assign(event_timestamp=pd.Timestamp.now(tz="UTC"))
        with self._answering():
            self.store.write_to_online_store(self.defs.item_view.name, online)
        return table.num_rows

    def upsert_items(self, items: Mapping[str, Mapping]) -> int:
        """Items added or changed (item_id -> record, ``streamrec.catalog``'s form) into the item parquet and online.

        The parquet is rewritten with them in place (training joins it as of the epoch: the catalog, not a log)."""
        if not items:
            return 0
        path = self.offline_dir / self._module.ITEMS_FILE
        schema = arrow_schema(self.defs.item_view)
        table = to_table(catalog_frame(items).assign(event_timestamp=EPOCH), schema, "catalog changes")
        if path.is_file():
            kept = pq.read_table(path, schema=schema)
            kept = kept.filter(pc.invert(pc.is_in(kept["item_id"], table["item_id"])))
            table = pa.concat_tables([kept, table])
        write_parquet_atomic(table, path)
        online = to_frame(table.filter(pc.is_in(table["item_id"], pa.array(list(items))))).assign(
            event_timestamp=pd.Timestamp.now(tz="UTC"))  # newer than what Redis holds, as in load_catalog
        with self._answering():
            self.store.write_to_online_store(self.defs.item_view.name, online)
        return len(items)

    def build_profiles(self, events: pd.DataFrame, cut: datetime, *, online: bool = True) -> int:
        """Long-term profiles from the events up to ``cut``, stamped ``cut``, into the offline store and, if
        ``online``, the online store; returns the user count."""
        items_path = self.offline_dir / self._module.ITEMS_FILE
        if not items_path.is_file():
            raise UserError(f"no catalog at {items_path}: run `streamrec features load-catalog` first")
        items = pd.read_parquet(items_path, columns=["item_id", "genres"])
        profiles = user_profiles(events, items, cut)
        table = to_table(profiles, arrow_schema(self.defs.profile_view), "profiles")
        cut_ms = int(pd.Timestamp(cut).timestamp() * 1000)
        write_parquet_atomic(table, self.offline_dir / self._module.PROFILE_DIR / f"profile-{cut_ms}.parquet")
        if online:
            with self._answering():
                self._write_online(self.defs.profile_view, to_frame(table))
        return table.num_rows

    # ---- training ----
    def training_set(self, entity_df: pd.DataFrame, views: Sequence[str] = ("session", "profile", "item")) -> pd.DataFrame:
        """``entity_df`` (the ``views``' keys: user_id for session and profile, item_id for item; event_timestamp;
        any other columns) with the features of ``views`` joined point-in-time: a row sees only feature rows
        stamped strictly before its own timestamp (and, for session features, at most 30 days before), so the
        labelled event's own update never leaks into its features. Rows keep their order; a row with nothing to
        see gets nulls."""
        chosen = [self._views[name] for name in views]
        missing = {"event_timestamp", *(view.entity_columns[0].name for view in chosen)} - set(entity_df.columns)
        if missing:
            raise ValueError(f"entity_df lacks columns {sorted(missing)}")
        out = entity_df.assign(event_timestamp=pd.to_datetime(entity_df["event_timestamp"], utc=True).astype("datetime64[ns, UTC]"))
        for view in chosen:
            key = view.entity_columns[0].name
            out = out.merge(self._historical(view, out), on=[key, "event_timestamp"], how="left")
            out = out.astype({f.name: "Int64" for f in view.features if f.dtype == Int64})
        return out

    @property
    def _views(self) -> dict[str, FeatureView]:
        return {"session": self.defs.session_view, "profile": self.defs.profile_view, "item": self.defs.item_view}

    def _historical(self, view: FeatureView, entity_df: pd.DataFrame) -> pd.DataFrame:
        """One view's point-in-time features for the distinct (key, timestamp) pairs of ``entity_df``.

        One view per call, over distinct pairs of keys the source holds, then merged back:
        Feast's Dask store collapses entity rows that share a join key and timestamp
        (feast-dev/feast#6787), drops a row whose only matches are later than it, and fails
        outright when no key matches.
        """
        key, names = view.entity_columns[0].name, [f.name for f in view.features]
        source = view.batch_source
        assert isinstance(source, FileSource)  # every view of the repo reads parquet files
        files = _parquet_files(source.path)
        if not files:
            raise UserError(f"no offline data for {view.name} at {source.path}")
        known = pd.concat([pd.read_parquet(f.path, columns=[key], filesystem=f.fs)[key] for f in files]).unique()
        pairs = entity_df.loc[entity_df[key].isin(known), [key, "event_timestamp"]].drop_duplicates()
        if pairs.empty:
            return pairs.reindex(columns=[key, "event_timestamp", *names])
        refs = [f"{view.name}:{n}" for n in names]
        # Feast joins rows stamped at or before the entity time; asking a tick earlier makes it strict.
        asked = pairs.assign(event_timestamp=pairs["event_timestamp"] - TICK)
        found = pd.concat([self.store.get_historical_features(entity_df=chunk, features=refs).to_df()
                           for chunk in _by_keys(asked, key, HISTORICAL_CHUNK_ROWS)], ignore_index=True)
        found["event_timestamp"] = found["event_timestamp"] + TICK
        return found[[key, "event_timestamp", *names]]


# Feast's point-in-time join pairs each entity row with every earlier feature row of its key, then keeps the
# latest, so its memory grows with rows x rows per key (MovieLens-1M's 1M requests in one query: ~14 GB).
HISTORICAL_CHUNK_ROWS = 100_000


def _by_keys(rows: pd.DataFrame, key: str, limit: int) -> list[pd.DataFrame]:
    """``rows`` in parts of about ``limit`` rows, each holding whole keys: a key's rows are joined together."""
    codes, _ = pd.factorize(rows[key])
    per_key = np.bincount(codes)
    part_of_key = (np.cumsum(per_key) - per_key) // limit  # by the rows before the key: a big key starts a part
    return [part for _, part in rows.groupby(part_of_key[codes], sort=True)]


def _parquet_files(source: str) -> list[Location]:
    """The files a source path or URI names: the file itself, or a directory glob's matches (``<dir>/**/*.parquet``)."""
    base, recursive, pattern = source.partition("/**/")
    if recursive:
        return Location.of(base).glob(pattern)
    file = Location.of(source)
    return [file] if file.exists() and not file.is_dir() else []
