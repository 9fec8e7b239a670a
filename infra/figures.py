"""Each service's key figure for ``infra status``: asked of the running service, best effort.

A figure that cannot be read (the service is starting, a probe times out) is ``None``: status
reports what it can and never fails on a figure.
"""
from __future__ import annotations

import logging

import httpx

from streamrec.config import Settings

log = logging.getLogger(__name__)
TIMEOUT_S = 2.0


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=TIMEOUT_S)
    except httpx.HTTPError:
        return None


def broker_figure(settings: Settings) -> str | None:
    """Records on the events and dead-letter topics (their high watermarks)."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    from streams.kafka_util import assigned_consumer, high_watermarks, partitions_of

    k = settings.kafka
    try:
        consumer = assigned_consumer(k)
    except KafkaError:
        return None
    try:
        counts = {}
        for topic in (k.events_topic, k.dlq_topic):
            tps = [TopicPartition(topic, p) for p in partitions_of(consumer, topic, timeout_s=TIMEOUT_S)]
            counts[topic] = sum(high_watermarks(consumer, tps, timeout_s=TIMEOUT_S).values())
    except KafkaError as e:
        log.debug("broker figure: %s", e)
        return None
    finally:
        consumer.close()
    return f"events {counts[k.events_topic]:,}, dead letters {counts[k.dlq_topic]:,}"


def redis_figure(settings: Settings) -> str | None:
    """Keys in the online store."""
    import redis as redis_client

    from infra.redis import host_port

    host, port = host_port(settings)
    try:
        keys = redis_client.Redis(host=host, port=port, socket_timeout=TIMEOUT_S).dbsize()
    except redis_client.RedisError:
        return None
    return f"keys {keys:,}"


def llm_figure(settings: Settings) -> str | None:
    """The model the server serves."""
    from infra.llm import served_models

    ids = served_models(settings, timeout_s=TIMEOUT_S)
    return f"model {', '.join(ids)}" if ids else None


def model_server_figure(settings: Settings) -> str | None:
    """The model version(s) available (TF Serving's model status API)."""
    from infra.apps import model_status_url

    m = settings.model
    resp = _get(model_status_url(settings))
    if resp is not None and resp.status_code == 404:  # up, before the first `streamrec train`
        return "no model version yet"
    if resp is None or resp.status_code != 200:
        return None
    versions = [v["version"] for v in resp.json().get("model_version_status", []) if v.get("state") == "AVAILABLE"]
    return f"{m.name} version {', '.join(versions)}" if versions else "no model version yet"


def stream_figure(settings: Settings) -> str | None:
    """Records in Kafka the stream job has not processed yet (its consumer lag gauge)."""
    from prometheus_client.parser import text_string_to_metric_families

    port = settings.spark.metrics_port
    resp = _get(f"http://127.0.0.1:{port}/metrics") if port else None
    if resp is None or resp.status_code != 200:
        return None
    lag = [s.value for family in text_string_to_metric_families(resp.text)
           if family.name == "streamrec_stream_consumer_lag" for s in family.samples]
    return f"consumer lag {int(sum(lag)):,}" if lag else "no batch yet"
