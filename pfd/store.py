"""The artifact store: the one place every workflow step reads inputs from and writes outputs to.

Steps run on different machines (laptop, HPC node, cloud worker), so they exchange
data through a store addressed by a URL rather than through local paths. Two backends
share one contract: a local directory (tests, single machine, shared filesystems) and
S3-compatible object storage (MinIO, AWS, Ceph). Every write records a sha256 and every
read verifies it, because a silently truncated dataset or model would poison all later
iterations of the workflow without anyone noticing.

Keys are relative ``/``-separated paths. They are validated strictly so that a key can
never address anything outside the store root / prefix and means the same on every backend.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from ase import Atoms

from pfd.frames import from_extxyz, to_extxyz

log = logging.getLogger(__name__)
_T = TypeVar("_T")

__all__ = [
    "ArtifactStore",
    "IntegrityError",
    "LocalStore",
    "NotFoundInStore",
    "S3Store",
    "StoreError",
    "open_store",
]

MiB = 1024 * 1024
DEFAULT_STORE = "./pfd-store"

# Local-backend bookkeeping files. Keys may not end with these suffixes on any backend,
# so a workflow that runs locally behaves identically on S3 and vice versa.
_SIDECAR_SUFFIX = ".sha256"
_TMP_SUFFIX = ".pfd-tmp"
_LOCK_SUFFIX = ".pfd-lock"
_RESERVED_SUFFIXES = (_SIDECAR_SUFFIX, _TMP_SUFFIX, _LOCK_SUFFIX)

_KEY_RULES = (
    "keys are relative '/'-separated paths such as 'datasets/iter-000/train.extxyz' "
    "(no leading or trailing '/', no empty, '.' or '..' segments, no backslashes, "
    f"not ending in {' or '.join(repr(s) for s in _RESERVED_SUFFIXES)})"
)


class StoreError(RuntimeError):
    """Any failure of the store; the message always names the key or URI involved."""


class IntegrityError(StoreError):
    """Stored bytes do not match the sha256 recorded when they were written."""


class NotFoundInStore(StoreError, KeyError):
    """A missing key; also a ``KeyError`` so callers can treat the store like a mapping."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message, wrapping it in quotes.
        return str(self.args[0]) if self.args else ""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_key(key: str) -> str:
    """Reject anything that is not a plain relative path, before it can touch a backend."""
    if not isinstance(key, str):
        raise StoreError(f"invalid store key {key!r}: must be a str; {_KEY_RULES}")
    reason = None
    if not key:
        reason = "empty"
    elif "\\" in key:
        reason = "contains a backslash"
    elif "\x00" in key:
        reason = "contains a NUL character"
    elif key.startswith("/"):
        reason = "is absolute"
    elif key.endswith("/"):
        reason = "ends with '/'"
    elif any(seg in ("", ".", "..") for seg in key.split("/")):
        reason = "has an empty, '.' or '..' segment"
    elif key.endswith(_RESERVED_SUFFIXES):
        reason = "uses a suffix reserved for store bookkeeping"
    if reason:
        raise StoreError(f"invalid store key {key!r}: {reason}; {_KEY_RULES}")
    return key


def _check_prefix(prefix: str) -> str:
    """A listing prefix is a key, optionally with a trailing '/', or '' for everything."""
    if prefix == "":
        return prefix
    if not isinstance(prefix, str):
        raise StoreError(f"invalid store prefix {prefix!r}: must be a str")
    body = prefix[:-1] if prefix.endswith("/") else prefix
    try:
        _check_key(body)
    except StoreError as exc:
        raise StoreError(f"invalid store prefix {prefix!r}: {exc}") from None
    return prefix


def _dir_prefix(prefix: str) -> str:
    """Normalise a directory prefix to end in '/' so 'models/m1' never matches 'models/m10'."""
    _check_prefix(prefix)
    return prefix if prefix == "" or prefix.endswith("/") else prefix + "/"


def _fsync_dir(directory: Path) -> None:
    """Persist a rename; best effort because some filesystems refuse fsync on directories."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write so that readers see either the old or the new content, never a partial file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
    # os.open with 0o666 honours the umask, unlike mkstemp's 0o600, so group members on a
    # shared filesystem can read what another user's job wrote.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class ArtifactStore(abc.ABC):
    """Backend-independent contract; conveniences are built once on the byte primitives."""

    url: str

    # -- primitives -------------------------------------------------------------------
    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str: ...

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys starting with ``prefix`` (plain string match), recursive, sorted."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove a key; deleting a missing key is a no-op so cleanup steps can be retried."""

    @abc.abstractmethod
    def uri(self, key: str) -> str: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- conveniences -----------------------------------------------------------------
    def put_text(self, key: str, text: str) -> str:
        return self.put_bytes(key, text.encode("utf-8"))

    def get_text(self, key: str) -> str:
        data = self.get_bytes(key)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StoreError(f"{self.uri(key)} is not UTF-8 text: {exc}") from exc

    def put_json(self, key: str, obj: Any) -> str:
        try:
            text = json.dumps(obj, indent=2, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"cannot serialise JSON for {self.uri(key)}: {exc}") from exc
        return self.put_text(key, text + "\n")

    def get_json(self, key: str) -> Any:
        text = self.get_text(key)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoreError(f"{self.uri(key)} is not valid JSON: {exc}") from exc

    def put_frames(self, key: str, frames: Sequence[Atoms]) -> str:
        return self.put_bytes(key, to_extxyz(frames))

    def get_frames(self, key: str) -> builtins.list[Atoms]:
        data = self.get_bytes(key)
        try:
            return from_extxyz(data)
        except Exception as exc:  # ase raises a zoo of types for malformed extxyz
            raise StoreError(f"{self.uri(key)} is not a readable extxyz file: {exc}") from exc

    def put_file(self, key: str, path: str | Path) -> str:
        src = Path(path)
        try:
            data = src.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {src} to upload to {self.uri(key)}: {exc}") from exc
        return self.put_bytes(key, data)

    def get_file(self, key: str, path: str | Path) -> Path:
        """Download atomically so an interrupted copy never looks like a complete model."""
        data = self.get_bytes(key)
        dst = Path(path)
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(dst, data)
        except OSError as exc:
            raise StoreError(f"cannot write {self.uri(key)} to {dst}: {exc}") from exc
        return dst

    def put_dir(self, prefix: str, local_dir: str | Path) -> builtins.list[str]:
        """Upload every file below ``local_dir`` (empty directories are not represented)."""
        base = _dir_prefix(prefix)
        src = Path(local_dir)
        if not src.is_dir():
            raise StoreError(f"cannot upload {src} to {self.url}/{base}: not a directory")
        files: builtins.list[tuple[str, Path]] = []
        for dirpath, _dirnames, filenames in os.walk(src):
            for name in filenames:
                full = Path(dirpath, name)
                files.append((_check_key(base + full.relative_to(src).as_posix()), full))
        files.sort()
        # Validate every key before writing any, so a bad file name leaves nothing half-done.
        for key, full in files:
            self.put_file(key, full)
        return [key for key, _ in files]

    def get_dir(self, prefix: str, local_dir: str | Path) -> Path:
        base = _dir_prefix(prefix)
        keys = self.list(base)
        if not keys:
            raise NotFoundInStore(f"not in store: no keys under {self.url}/{base}")
        dst = Path(local_dir)
        for key in keys:
            self.get_file(key, dst.joinpath(*key[len(base) :].split("/")))
        return dst


class LocalStore(ArtifactStore):
    """A directory tree; sha256 lives in a ``<file>.sha256`` sidecar next to each file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(path.name + _SIDECAR_SUFFIX)

    def uri(self, key: str) -> str:
        return str(self._path(key))

    @contextlib.contextmanager
    def _writer_lock(self, path: Path) -> Iterator[None]:
        """One writer of a key at a time, across processes.

        A key is two files (data, sidecar); two processes writing the same key with
        different bytes (two flows labelling one frame, a rerun racing a resume) would
        otherwise interleave into data of one and checksum of the other: a permanent
        integrity error. Lock files are empty, live in one hidden directory at the root
        (named by a hash of the key, so data directories hold only data and checksums)
        and are left in place: deleting one would let a third writer lock another inode.
        """
        locks = self.root / ".pfd-locks"
        locks.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(str(path.relative_to(self.root)).encode()).hexdigest()[:32]
        fd = os.open(locks / f"{name}{_LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def put_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        digest = _sha256(data)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._writer_lock(path):
                # Sidecar first: a crash in between leaves either an invisible orphan
                # sidecar (new key) or a detectable mismatch (overwrite), never
                # unverifiable data.
                atomic_write(self._sidecar(path), f"{digest}  {path.name}\n".encode())
                atomic_write(path, bytes(data))
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc
        return str(path)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        sidecar = self._sidecar(path)
        recorded: str | None = None
        actual = ""
        # A few attempts: a reader racing a concurrent overwrite can see the new sidecar
        # with the old data for an instant; a real corruption fails every time.
        attempts = 4
        for attempt in range(attempts):
            try:
                data = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise NotFoundInStore(f"not in store: {path}") from None
            except OSError as exc:
                raise StoreError(f"cannot read {path}: {exc}") from exc
            try:
                fields = sidecar.read_text().split()
                recorded = fields[0] if fields else ""
            except FileNotFoundError:
                recorded = None
            except OSError as exc:
                raise StoreError(f"cannot read checksum {sidecar}: {exc}") from exc
            actual = _sha256(data)
            if recorded == actual:
                return data
            if attempt < attempts - 1:
                time.sleep(0.05 * (attempt + 1))
        if recorded is None:
            raise IntegrityError(f"{path} has no recorded sha256 (missing {sidecar.name})")
        raise IntegrityError(
            f"sha256 mismatch for {path}: recorded {recorded or '<empty>'}, actual {actual}"
        )

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> builtins.list[str]:
        _check_prefix(prefix)
        head = prefix.rpartition("/")[0]
        start = self.root.joinpath(*head.split("/")) if head else self.root
        keys = []
        for dirpath, _dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.endswith(_RESERVED_SUFFIXES):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if not path.parent.is_dir():
            return
        try:
            with self._writer_lock(path):
                # Data first: a crash in between leaves only an invisible orphan sidecar.
                path.unlink(missing_ok=True)
                self._sidecar(path).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {exc}") from exc


class S3Store(ArtifactStore):
    """S3-compatible object storage; sha256 travels in the object's ``sha256`` metadata.

    Credentials come only from boto3's default chain (environment, config files, instance
    roles) and are never stored on this object, so they cannot leak through repr or logs.
    """

    _READ_ATTEMPTS = 3

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        *,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int | None = None,
        outage_s: float | None = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise StoreError(f"invalid S3 bucket name {bucket!r}")
        prefix = prefix.strip("/")
        if prefix:
            try:
                _check_key(prefix)
            except StoreError as exc:
                raise StoreError(f"invalid S3 prefix {prefix!r}: {exc}") from None
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.multipart_threshold = multipart_threshold
        # S3 rejects parts under 5 MiB (except the last one).
        self.multipart_chunksize = max(multipart_chunksize or multipart_threshold, 5 * MiB)
        # How long to wait out an unreachable endpoint before failing (PFD_S3_OUTAGE_S).
        self.outage_s = float(outage_s if outage_s is not None
                              else os.environ.get("PFD_S3_OUTAGE_S", "300"))
        self._client = client
        self._owns_client = client is None
        self._bucket_ready = False

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3Store({self.url!r}{endpoint})"

    def __getstate__(self) -> dict[str, Any]:
        """Allow shipping the store to other workers: a client we built is rebuilt there."""
        state = self.__dict__.copy()
        if self._owns_client:
            state["_client"] = None
        return state

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session(region_name=self.region)
            self._client = session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=session.region_name or "us-east-1",
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"mode": "standard", "max_attempts": 5},
                ),
            )
        return self._client

    def _object_key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    # -- error mapping ----------------------------------------------------------------
    @staticmethod
    def _code(exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    def _fail(self, action: str, target: str, exc: Exception) -> StoreError:
        from botocore.exceptions import NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return StoreError(
                f"cannot {action} {target}: no AWS credentials found (set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY or configure a profile)"
            )
        code = self._code(exc)
        return StoreError(f"cannot {action} {target}: {code or type(exc).__name__}: {exc}")

    def _is_outage(self, exc: Exception) -> bool:
        """Errors a restarting or overloaded endpoint produces, as opposed to real answers."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        if isinstance(exc, EndpointConnectionError | ConnectionClosedError
                      | ConnectTimeoutError | ReadTimeoutError):
            return True
        if isinstance(exc, S3UploadFailedError):  # the transfer manager wraps the cause
            text = str(exc)
            return any(s in text for s in ("Could not connect", "Connection was closed",
                                           "timeout", "503", "500", "502", "504"))
        status = (getattr(exc, "response", None) or {}).get(
            "ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return bool(status and int(status) >= 500) or self._code(exc) in (
            "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout")

    def _through_outages(self, call: Callable[[], _T], action: str, target: str) -> _T:
        """Run ``call``, waiting out an endpoint outage of up to ``outage_s`` seconds.

        botocore's own retries span a few seconds at most; an object store restarted
        under a days-long run is down longer, and failing the run then would throw away
        the computation whose result we were about to store.
        """
        deadline = time.monotonic() + self.outage_s
        delay = 0.5
        while True:
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - classified right below
                if not self._is_outage(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("S3 %s of %s failed (%s); retrying in %.1f s", action, target,
                            type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._through_outages(lambda: self.client.head_bucket(Bucket=self.bucket),
                                  "access", f"s3://{self.bucket}")
        except ClientError as exc:
            if self._code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise self._fail("access bucket", f"s3://{self.bucket}", exc) from exc
            self._create_bucket()
        except BotoCoreError as exc:
            raise self._fail("access bucket", f"s3://{self.bucket}", exc) from exc
        self._bucket_ready = True

    def _create_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        region = self.client.meta.region_name
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if self._code(exc) != "BucketAlreadyOwnedByYou":
                raise self._fail("create bucket", f"s3://{self.bucket}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("create bucket", f"s3://{self.bucket}", exc) from exc

    # -- primitives -------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> str:
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        obj = self._object_key(key)
        uri = f"s3://{self.bucket}/{obj}"
        self._ensure_bucket()
        config = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
        )
        digest = _sha256(data)

        def upload() -> None:
            # A multipart upload cut short is aborted or left incomplete: S3 never shows
            # it as an object, so a reader sees the old version or nothing.
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, obj,
                                       ExtraArgs={"Metadata": {"sha256": digest}},
                                       Config=config)

        try:
            self._through_outages(upload, "write", uri)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise self._fail("write", uri, exc) from exc
        return uri

    def _fetch(self, obj: str, uri: str) -> tuple[bytes, dict[str, str]]:
        """GET body and metadata, retrying body reads that botocore's own retries miss."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )

        transient = (
            ResponseStreamingError,
            IncompleteReadError,
            ReadTimeoutError,
            ConnectionClosedError,
        )
        for attempt in range(self._READ_ATTEMPTS):
            try:
                resp = self._through_outages(
                    lambda: self.client.get_object(Bucket=self.bucket, Key=obj), "read", uri)
                return resp["Body"].read(), dict(resp.get("Metadata") or {})
            except transient as exc:
                if attempt == self._READ_ATTEMPTS - 1:
                    raise self._fail("read", uri, exc) from exc
                time.sleep(0.5 * 2**attempt)
            except ClientError as exc:
                if self._code(exc) in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
                    raise NotFoundInStore(f"not in store: {uri}") from None
                raise self._fail("read", uri, exc) from exc
            except BotoCoreError as exc:
                raise self._fail("read", uri, exc) from exc
        raise AssertionError("unreachable")

    def get_bytes(self, key: str) -> bytes:
        obj = self._object_key(key)
        uri = f"s3://{self.bucket}/{obj}"
        data, metadata = self._fetch(obj, uri)
        recorded = metadata.get("sha256")
        if not recorded:
            raise IntegrityError(f"{uri} has no recorded sha256 (object metadata 'sha256')")
        actual = _sha256(data)
        if recorded != actual:
            raise IntegrityError(f"sha256 mismatch for {uri}: recorded {recorded}, actual {actual}")
        return data

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        obj = self._object_key(key)
        try:
            self._through_outages(lambda: self.client.head_object(Bucket=self.bucket, Key=obj),
                                  "check", f"s3://{self.bucket}/{obj}")
        except ClientError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
                return False
            raise self._fail("check", f"s3://{self.bucket}/{obj}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("check", f"s3://{self.bucket}/{obj}", exc) from exc
        return True

    def list(self, prefix: str = "") -> builtins.list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        _check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        keys: builtins.list[str] = []

        def collect() -> None:
            keys.clear()
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(base) :]
                    if key and not key.endswith("/"):  # skip console "folder" markers
                        keys.append(key)

        try:
            self._through_outages(collect, "list", f"s3://{self.bucket}/{base}{prefix}")
        except ClientError as exc:
            if self._code(exc) == "NoSuchBucket":
                return []
            raise self._fail("list", f"s3://{self.bucket}/{base}{prefix}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("list", f"s3://{self.bucket}/{base}{prefix}", exc) from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        obj = self._object_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=obj)
        except ClientError as exc:
            if self._code(exc) == "NoSuchBucket":
                return
            raise self._fail("delete", f"s3://{self.bucket}/{obj}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("delete", f"s3://{self.bucket}/{obj}", exc) from exc


def _s3_endpoint_from_env() -> str | None:
    for var in ("PFD_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(var)
        if value:
            return value
    return None


def check_store_url(url: str) -> str:
    """Refuse store URLs that would put a secret where it gets copied: the URL is stored in
    the run's config copy, ``run.json``, logs and Prefect parameters. Credentials belong in
    the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) or a profile."""
    url = str(url).strip()
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        raise StoreError(
            f"store URL {scheme}://***@{rest.split('@', 1)[1]} contains credentials; "
            "put them in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a profile), never in "
            "the URL, which is copied into the run's records and logs")
    if sep and scheme not in ("s3", "file"):
        raise StoreError(f"unsupported store URL scheme {scheme!r} in {url!r}; "
                         "use a path, file:///abs/path or s3://bucket/prefix")
    if not url:
        raise StoreError("empty store URL; use a path, file:///abs/path or s3://bucket/prefix")
    if scheme == "s3" and not rest.partition("/")[0]:
        raise StoreError(f"store URL {url!r} names no bucket; use s3://bucket/prefix")
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise StoreError(f"store URL {url!r} must be file:///absolute/path")
    return url


def open_store(url: str | None = None) -> ArtifactStore:
    """Turn a store URL into a backend, so configuration is one string everywhere.

    ``None`` means ``$PFD_STORE`` or ``./pfd-store``. ``s3://bucket/prefix`` gives an
    :class:`S3Store` (endpoint from ``$PFD_S3_ENDPOINT_URL``, ``$AWS_ENDPOINT_URL_S3`` or
    ``$AWS_ENDPOINT_URL``); ``file:///abs/path`` or a plain path gives a :class:`LocalStore`.
    """
    if url is None:
        url = os.environ.get("PFD_STORE") or DEFAULT_STORE
    url = check_store_url(url)
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        return S3Store(bucket=bucket, prefix=prefix, endpoint_url=_s3_endpoint_from_env())
    if url.startswith("file://"):
        return LocalStore(unquote(urlsplit(url).path))
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(
            f"unsupported store URL scheme {scheme!r} in {url!r}; "
            "use a path, file:///abs/path or s3://bucket/prefix"
        )
    return LocalStore(url)
