"""Feature rows as Arrow tables and parquet files: a view's schema, conversions to and from pandas, atomic
writes, the newest row per key."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureView
from feast.types import from_feast_to_pyarrow_type

from streams.storage import Location


def arrow_schema(view: FeatureView) -> pa.Schema:
    """The parquet/arrow schema of a view's rows: join key, features, then the event timestamp."""
    fields = [pa.field(c.name, from_feast_to_pyarrow_type(c.dtype)) for c in view.entity_columns]
    fields += [pa.field(f.name, from_feast_to_pyarrow_type(f.dtype)) for f in view.features]
    assert view.batch_source is not None  # every view of the repo reads a file source
    fields.append(pa.field(view.batch_source.timestamp_field, pa.timestamp("us", tz="UTC")))
    return pa.schema(fields)


def to_table(df: pd.DataFrame, schema: pa.Schema, what: str) -> pa.Table:
    """``df`` as exactly ``schema`` (floats narrowed, timestamps to UTC; naive ones are taken as UTC)."""
    missing = [n for n in schema.names if n not in df.columns]
    unexpected = [c for c in df.columns if c not in schema.names]
    if missing or unexpected:
        raise ValueError(f"{what}: missing columns {missing}, unexpected columns {unexpected}")
    ts = schema.names[-1]  # arrow_schema puts the event timestamp last
    df = df.assign(**{ts: pd.to_datetime(df[ts], utc=True)})
    try:
        return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"{what}: a column does not fit the feature types: {e}") from None


def to_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow rows as pandas for Feast, keeping integer columns integer when they hold nulls."""
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def write_parquet_atomic(table: pa.Table, where: Path | Location) -> None:
    """Write whole or not at all (``Location.write_atomic``), to a local path or a URI's location."""
    out = pa.BufferOutputStream()
    pq.write_table(table, out)
    Location.of(where).write_atomic(out.getvalue())


def latest_per_key(df: pd.DataFrame, key: str, ts: str = "event_timestamp") -> pd.DataFrame:
    """One row per key, the newest; on a tie the later row wins (the fold's order)."""
    return df.sort_values(ts, kind="stable").drop_duplicates(key, keep="last")
