"""Files that must outlive a machine (the stream's checkpoint, the offline session log): a local path or a URI.

A location is a plain path, a ``file://`` URI, or any scheme ``pyarrow.fs`` opens (``s3://``, ``gs://``,
``hdfs://``, ...); Hadoop's ``s3a://`` and ``s3n://`` (what Spark is given) name the same objects as pyarrow's
``s3://``. Every read and write goes through ``pyarrow.fs``, so the code is the same for all of them.
A write is whole or not at all: a dot-named temporary beside the target, then a move (a rename on local disks
and HDFS; a server-side copy on object stores, where an object appears whole). Readers skip dot-files.
"""
from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from streamrec.errors import UserError

_HADOOP_S3 = ("s3a", "s3n")


@dataclass(frozen=True)
class Location:
    fs: pafs.FileSystem
    path: str  # in ``fs``'s terms
    uri: str  # as given (with the parts joined since): what Spark and messages are given

    # Path's names where Path has the method: callers written for local paths take a Location unchanged.

    @classmethod
    def of(cls, where: str | os.PathLike | Location, setting: str = "location") -> Location:
        """``where`` opened; ``setting`` names it in the error for a URI no filesystem here can open."""
        if isinstance(where, Location):
            return where
        text = os.fspath(where).strip()
        if not text:
            raise UserError(f"{setting}: an empty location")
        if "://" not in text:  # a plain path; a relative one is taken from the working dir, like data_dir
            path = Path(text).expanduser().absolute()
            return cls(pafs.LocalFileSystem(), path.as_posix(), str(path))
        scheme, rest = text.split("://", 1)
        try:
            fs, path = pafs.FileSystem.from_uri(("s3" if scheme.lower() in _HADOOP_S3 else scheme) + "://" + rest)
        except (pa.ArrowException, OSError) as e:  # an unknown scheme, a missing client library (HDFS: libjvm)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{setting}: cannot open {text!r}: {reason}") from None
        return cls(fs, path.rstrip("/"), text.rstrip("/"))

    def __truediv__(self, name: str) -> Location:
        return Location(self.fs, f"{self.path}/{name}", f"{self.uri}/{name}")

    def __str__(self) -> str:
        return self.uri

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def with_name(self, name: str) -> Location:
        parent, uri_parent = self.path.rsplit("/", 1)[0], self.uri.rsplit("/", 1)[0]
        return Location(self.fs, f"{parent}/{name}", f"{uri_parent}/{name}")

    @property
    def local(self) -> Path | None:
        """The local path, if on this machine's filesystem."""
        return Path(self.path) if isinstance(self.fs, pafs.LocalFileSystem) else None

    @property
    def for_readers(self) -> str:
        """The location as other readers (DuckDB, pandas) take it: a local path, or the URI (``s3a://`` as ``s3://``)."""
        local = self.local
        return str(local) if local is not None else re.sub(r"^s3[an]://", "s3://", self.uri, flags=re.IGNORECASE)

    def _type(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def _under(self, recursive: bool) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive)
        return sorted(self.fs.get_file_info(selector), key=lambda info: info.path)

    def iterdir(self) -> list[Location]:
        """The entries right under this directory (none if it does not exist)."""
        return [self / info.base_name for info in self._under(recursive=False)]

    def glob(self, pattern: str) -> list[Location]:
        """The files under this directory whose relative path matches ``pattern`` (``*`` may cross a ``/``)."""
        names = (info.path[len(self.path) + 1:] for info in self._under(recursive=True) if info.type == pafs.FileType.File)
        return [self / name for name in names if fnmatch.fnmatchcase(name, pattern)]

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def read_bytes(self) -> bytes:
        """The file's bytes; ``FileNotFoundError`` if it does not exist."""
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def write_atomic(self, data: bytes | pa.Buffer) -> None:
        """Write whole or not at all (the temporary's dot name keeps readers away from it)."""
        parent, tmp = self.path.rsplit("/", 1)[0], self.path.rsplit("/", 1)[0] + f"/.{self.name}.tmp"
        self.fs.create_dir(parent, recursive=True)
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, self.path)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        """Remove this directory and everything under it, if it exists."""
        if self.is_dir():
            self.fs.delete_dir(self.path)

    def rename(self, to: Location) -> None:
        """Move this file or directory to ``to`` (same filesystem)."""
        self.fs.move(self.path, to.path)
