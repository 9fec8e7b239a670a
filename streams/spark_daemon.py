"""Spark's Python worker daemon, with the Kafka source's imports done before it forks workers.

Spark ends a Python worker that sat idle for a minute; the next batch then forks a new one
from the daemon, and that worker imported pyarrow, kafka-python and confluent-kafka anew:
~1.5 s here, which an event arriving after a quiet minute waited. Imported here, they are
inherited by every forked worker. Selected by ``spark.python.daemon.module``.
"""
import confluent_kafka  # noqa: F401
import pyarrow  # noqa: F401
from pyspark import daemon

import streams.kafka_source  # noqa: F401

if __name__ == "__main__":
    daemon.manager()
