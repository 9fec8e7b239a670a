"""Items added or changed while serving: the catalog topic into the pipeline's catalog and retrieval, no restart.

A thread follows ``kafka.catalog_topic`` (``streams.catalog_topic.CatalogFollower``: from the beginning, so a
restarted API holds every change again) and hands each poll's changes to ``Pipeline.add_items``, with their text
embeddings (``models.text_embedding``). A new item is then served from its content: retrieval's content source
places it by genres and text, and Wide & Deep scores it from its genres, year and length
(``Scorer``'s ``changed`` items). The stream job writes the same changes to Feast's item view.

A change the catalog cannot apply (an update of an unknown item, a record that is no change) is skipped here and
logged: the stream job sends it to the catalog DLQ, once, for all readers.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from kafka.errors import KafkaError

from models.text_embedding import item_text, text_encoder
from serving.pipeline import Pipeline
from streamrec.catalog import apply_changes
from streamrec.config import Settings
from streams.catalog_topic import CatalogFollower, Change
from streams.kafka_util import BrokerUnavailable, any_broker_listening

log = logging.getLogger(__name__)

POLL_S = 0.5
RETRY_S = 5.0


class CatalogWatcher:
    def __init__(self, settings: Settings, pipeline: Pipeline):
        self.settings = settings
        self.pipeline = pipeline
        self.state = "stopped"  # stopped | connecting | following | error: <why>
        self.applied = 0
        self.refused = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="catalog-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.state = "stopped"

    def status(self) -> dict:
        return {"state": self.state, "topic": self.settings.kafka.catalog_topic, "applied": self.applied,
                "refused": self.refused, "items": len(self.pipeline.catalog)}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.state = "connecting"
            follower = None
            if not any_broker_listening(self.settings.kafka):
                self.state = f"error: no broker listens at {self.settings.kafka.bootstrap_servers}"
                self._stop.wait(RETRY_S)
                continue
            try:
                follower = CatalogFollower(self.settings)
                self.state = "following"
                while not self._stop.is_set():
                    changes, bad = follower.poll(POLL_S)
                    self.refused += len(bad)
                    if changes:
                        self.apply(changes)
            except (KafkaError, BrokerUnavailable) as e:
                self.state = f"error: {type(e).__name__}: {e}"
                log.warning("catalog watcher lost Kafka (%s); again in %.0fs", e, RETRY_S)
                self._stop.wait(RETRY_S)
            except Exception as e:  # a bug in one change must not end the API's catalog updates
                self.state = f"error: {type(e).__name__}: {e}"
                log.exception("catalog watcher failed; starting over in %.0fs", RETRY_S)
                self._stop.wait(RETRY_S)
            finally:
                if follower is not None:
                    follower.close()

    def apply(self, changes: Sequence[Change]) -> None:
        """Serve what ``changes`` leave; log the ones the catalog refuses."""
        merged, refused = apply_changes(self.pipeline.catalog.rows, [(c.op, c.item) for c in changes])
        for n, error in refused:
            log.warning("catalog change %s skipped: %s", changes[n].source, error)
        self.refused += len(refused)
        if merged:
            ids = list(merged)
            vectors = text_encoder().encode([item_text(merged[i]) for i in ids])
            self.pipeline.add_items(merged, dict(zip(ids, vectors)))
            self.applied += len(merged)
