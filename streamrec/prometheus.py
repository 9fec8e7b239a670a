"""What every Prometheus registry of streamrec needs, whichever library imported first."""
from __future__ import annotations

from prometheus_client import values


def single_process_values() -> None:
    """Undo Feast's process-wide switch of prometheus_client to multiprocess mode (call before making metrics).

    ``feast.metrics`` sets PROMETHEUS_MULTIPROC_DIR when imported (for its Gunicorn workers); prometheus_client
    then keeps every metric's value in a file keyed by name and labels, so two registries in one process (two
    apps, a benchmark's job and its floor, a test after a job) share their counts. Each of our processes serves
    its own registries and needs plain in-memory values.
    """
    if values.ValueClass is not values.MutexValue:
        values.ValueClass = values.MutexValue
