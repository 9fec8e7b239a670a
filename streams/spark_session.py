"""The SparkSession streamrec jobs run in, and the Kafka stream they read.

pyspark is imported inside the functions so CLI modules can import this one cheaply.

``spark.master`` may be ``local[N]`` (executors in the driver's JVM) or ``local-cluster[W,C,M]``: W workers,
each starting an executor JVM of C cores and M MiB, from pip's pyspark as they are (``SPARK_HOME`` is the
pyspark package; the launcher finds it). Such executors are separate processes, as on a cluster: what runs
there (the Kafka source's ``read``) gets only what is pickled with it. Each executor asks for the workers'
M MiB (with Spark's 1 GiB default, smaller workers refuse to start). Their working dirs and logs are in
``$SPARK_HOME/work/app-*``, inside the installed package, which must be writable: Spark's local cluster
ignores ``SPARK_WORKER_DIR`` and sets no other work dir outside its own test mode.
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from streams.storage import Location

# The native Kafka source's columns; both sources yield exactly these.
KAFKA_COLUMNS = ("key", "value", "topic", "partition", "offset", "timestamp", "timestampType")
_LOCAL_CLUSTER = re.compile(r"^local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]$")


def cluster_memory_mb(master: str) -> int | None:
    """The MiB of each worker of a ``local-cluster[workers, cores, MiB]`` master; None for another master."""
    m = _LOCAL_CLUSTER.match(master.strip())
    return int(m.group(3)) if m else None


def get_spark(settings: Settings, *, app_name: str = "streamrec", warehouse_dir: str | os.PathLike | None = None) -> SparkSession:
    """A SparkSession configured from ``settings.spark``, with the Python Kafka source registered.

    Returns the process's existing session if there is one (JVM-level settings such
    as driver memory then stay as they were).
    """
    from pyspark.sql import SparkSession

    from streams.kafka_source import KafkaDataSource

    # Python workers must be this interpreter: the venv has kafka-python and streamrec.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    # local mode: bind to loopback instead of guessing an interface (and warning about it)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    warehouse = Path(warehouse_dir) if warehouse_dir else settings.data_path / "spark" / "warehouse"
    builder = SparkSession.builder
    if (worker_mb := cluster_memory_mb(settings.spark.master)) is not None:
        builder = builder.config("spark.executor.memory", f"{worker_mb}m")
    spark = (
        builder.master(settings.spark.master)
        .appName(app_name)
        .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # local mode runs executors inside the driver JVM (local-cluster: the workers too); 2 GiB suits small hosts.
        .config("spark.driver.memory", "2g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.python.daemon.module", "streams.spark_daemon")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    spark.dataSource.register(KafkaDataSource)
    return spark


def _identity(batches):
    yield from batches


def warm_python_workers(spark: SparkSession) -> None:
    """Run a trivial Python task, so Spark keeps a Python worker (and the Kafka reader it caches).

    Spark ends a Python worker idle for a minute; the next micro-batch then waits ~1 s for a new
    one. A job that idles calls this every half minute instead.
    """
    spark.range(1).mapInArrow(_identity, "id long").collect()


def kafka_stream(
    spark: SparkSession,
    settings: Settings,
    topics: Sequence[str] | None = None,
    starting_offsets: str | Mapping[str, Mapping[str, int]] = "earliest",
    fingerprint_file: Location | None = None,
) -> DataFrame:
    """A streaming DataFrame of ``topics`` (default: the events topic) with ``KAFKA_COLUMNS``.

    Uses the Python source, or Spark's native one when ``spark.source`` is ``"kafka"``
    (needs spark-sql-kafka on the classpath). ``starting_offsets`` applies only to a
    query without a checkpoint; the default reads the topics' whole history.
    ``kafka.client_options`` are passed as ``kafka.<name with dots>``, which matches the
    Java client's names for the common ones (``security_protocol``, ``sasl_mechanism``).
    ``fingerprint_file``: the Python source checks records before each range against it
    (``streams.kafka_source.Fingerprints``; the native source has no such check).
    """
    from streams.kafka_source import SOURCE_NAME

    source = settings.spark.source
    topics = list(topics or [settings.kafka.events_topic])
    starting = starting_offsets if isinstance(starting_offsets, str) else json.dumps(starting_offsets)
    reader = (
        spark.readStream.format(SOURCE_NAME if source == "python" else "kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", ",".join(topics))
        .option("startingOffsets", starting)
    )
    if settings.spark.max_events_per_trigger > 0:
        reader = reader.option("maxOffsetsPerTrigger", settings.spark.max_events_per_trigger)
    if fingerprint_file is not None and source == "python":
        reader = reader.option("fingerprintFile", str(fingerprint_file))
    for name, value in settings.kafka.client_options.items():
        reader = reader.option("kafka." + name.replace("_", "."), value)
    return reader.load().select(*KAFKA_COLUMNS)
