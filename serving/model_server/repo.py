"""Version discovery, loading and atomic hot swap for one model in a TF Serving repo layout.

``<repo>/<name>/<version>/saved_model.pb`` with numeric version dirs. Like TF Serving's
default "latest" version policy, one version serves at a time: the highest that loads.
A new version is loaded beside the serving one and swapped in by one reference
assignment, so a request in flight finishes on the version it started with.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2

from serving.model_server.errors import ServingError, code_from_number
from serving.model_server.servable import Servable

log = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State

# A version dir's files as (relative path, size, mtime); a dir still being copied changes between scans.
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: int  # a ModelVersionStatus.State value
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


class ModelRepo:
    def __init__(self, repo: Path, name: str, load: Callable[[str, int, Path], Servable] = Servable):
        self.name = name
        self.model_dir = Path(repo) / name
        self._load = load
        self._current: Servable | None = None
        self._status: dict[int, VersionStatus] = {}
        self._status_lock = threading.Lock()
        self._previous_scan: dict[int, Fingerprint] = {}
        self._failed: dict[int, Fingerprint] = {}

    def current(self) -> Servable | None:
        return self._current

    def servable(self, name: str, version: int | None = None, label: str = "") -> Servable:
        """The servable a request's model spec names; NOT_FOUND like TF Serving when it is not loaded."""
        if label:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        servable = self._current
        if name != self.name or servable is None or (version is not None and version != servable.version):
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")
        return servable

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        with self._status_lock:
            known = dict(self._status) if name == self.name else {}
        if version is None:
            if not known:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
            return [known[v] for v in sorted(known)]
        if version not in known:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
        return [known[version]]

    def poll(self) -> None:
        """Scan the model dir once; load the highest version that is new, settled and not known broken."""
        scan = self._scan()
        previous, self._previous_scan = self._previous_scan, scan
        current = self._current
        for version in sorted(scan, reverse=True):
            if current is not None and version == current.version:
                return
            fingerprint = scan[version]
            if self._failed.get(version) == fingerprint:
                continue  # retried only once its files change
            if current is not None and previous.get(version) != fingerprint:
                continue  # maybe still being written; while something serves, wait until it settles
            if self._swap_in(version, fingerprint):
                return

    def watch(self, interval_s: float, stop: threading.Event) -> None:
        """Poll every ``interval_s`` until ``stop`` is set (the body of the poller thread)."""
        while not stop.wait(interval_s):
            try:
                self.poll()
            except OSError:
                log.exception("scanning %s failed; trying again in %.1fs", self.model_dir, interval_s)

    def _scan(self) -> dict[int, Fingerprint]:
        try:
            entries = list(self.model_dir.iterdir())
        except FileNotFoundError:
            return {}
        found = {}
        for entry in entries:
            if entry.name.isascii() and entry.name.isdigit() and (entry / "saved_model.pb").is_file():
                try:
                    found[int(entry.name)] = _fingerprint(entry)
                except FileNotFoundError:
                    pass  # changing under us: look again next scan
        return found

    def _set_status(self, status: VersionStatus) -> None:
        with self._status_lock:
            self._status[status.version] = status

    def _swap_in(self, version: int, fingerprint: Fingerprint) -> bool:
        path = self.model_dir / str(version)
        self._set_status(VersionStatus(version, State.LOADING))
        try:
            servable = self._load(self.name, version, path)
        except Exception as e:  # whatever is wrong with the new version, the old one keeps serving
            code = code_from_number(e.error_code) if isinstance(e, tf.errors.OpError) else grpc.StatusCode.UNKNOWN
            message = f"{type(e).__name__}: {e}"
            log.error("model %s version %d (%s) failed to load; still serving %s: %s",
                      self.name, version, path, _describe(self._current), message)
            self._failed[version] = fingerprint
            self._set_status(VersionStatus(version, State.END, code, message))
            return False
        old, self._current = self._current, servable
        self._failed.pop(version, None)
        self._set_status(VersionStatus(version, State.AVAILABLE))
        log.info("model %s version %d is serving (from %s)", self.name, version, path)
        if old is not None:
            # Dropping the last reference unloads it once requests still holding it finish.
            self._set_status(VersionStatus(old.version, State.END))
            log.info("model %s version %d unloaded", self.name, old.version)
        return True


def _fingerprint(version_dir: Path) -> Fingerprint:
    files = []
    for p in version_dir.rglob("*"):
        if p.is_file():
            st = p.stat()
            files.append((str(p.relative_to(version_dir)), st.st_size, st.st_mtime_ns))
    return tuple(sorted(files))


def _describe(servable: Servable | None) -> str:
    return "nothing" if servable is None else f"version {servable.version}"
