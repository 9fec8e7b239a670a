"""The stream job's Prometheus metrics, scraped over HTTP as Prometheus would."""
import os
import subprocess
import sys

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from features.stream_metrics import StreamMetrics
from tests.helpers import free_port


def scrape(port: int) -> dict:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_batches_are_served_as_prometheus_metrics():
    StreamMetrics().observe_batch({"spark": 1.0}, np.array([1.0]), np.array([1.0]), {}, duplicates=1, users=1)  # another job's
    metrics = StreamMetrics()
    metrics.observe_batch({"spark": 0.2, "online": 0.05}, np.array([0.1, 0.5, 1.0, 2.5]), np.array([0.05, 0.4, 0.9, 2.0]),
                          {"late_event": 2, "not_json": 1}, duplicates=3, users=4)
    metrics.observe_batch({"spark": 0.3, "online": 0.04}, np.array([0.2]), np.array([0.1]), {"late_event": 1}, duplicates=0, users=1)
    metrics.set_lag({("events", 0): 7, ("events", 1): 0})
    port = free_port()
    server = metrics.serve(port)
    try:
        got = scrape(port)
    finally:
        server.shutdown()
    fresh = "streamrec_stream_event_to_online_seconds"
    # Prometheus buckets are cumulative and "<=": 1.0 falls in le=1.0
    assert got[(f"{fresh}_bucket", (("le", "0.1"),))] == 1
    assert got[(f"{fresh}_bucket", (("le", "0.5"),))] == 3
    assert got[(f"{fresh}_bucket", (("le", "1.0"),))] == 4
    assert got[(f"{fresh}_bucket", (("le", "+Inf"),))] == got[(f"{fresh}_count", ())] == 5
    assert abs(got[(f"{fresh}_sum", ())] - 4.3) < 1e-9
    assert got[("streamrec_stream_batch_stage_seconds_count", (("stage", "spark"),))] == 2
    assert got[("streamrec_stream_dead_letters_total", (("reason", "late_event"),))] == 3
    assert got[("streamrec_stream_consumer_lag", (("partition", "0"), ("topic", "events")))] == 7
    assert got[("streamrec_stream_events_folded_total", ())] == 5
    assert got[("streamrec_stream_duplicates_total", ())] == 3
    assert got[("streamrec_stream_batches_total", ())] == 2


def test_two_jobs_in_one_process_keep_their_own_counts_in_feasts_multiprocess_mode(tmp_path):
    # Importing feast.metrics before prometheus_client sets PROMETHEUS_MULTIPROC_DIR first (as here): values
    # then live in files keyed by metric name and would be shared by every StreamMetrics of the process.
    code = """
import numpy as np
from features.stream_metrics import StreamMetrics
a, b = StreamMetrics(), StreamMetrics()
for _ in range(3):
    a.observe_batch({"spark": 0.1}, np.array([0.1]), np.array([0.1]), {}, 0, 1)
print(b.stage.labels("spark")._sum.get(), a.stage.labels("spark")._sum.get())
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120, env=env).stdout
    assert [round(float(x), 6) for x in out.split()] == [0.0, 0.3]
