"""The result store: one storage root (local folder or s3://bucket/prefix) holding

    store/ddim/<ddim_key>.safetensors                 cached latents + DDIM-inverted noise of one video
    store/inversions/<inversion_key>/step-<N>.safetensors, meta.json    learned embeddings per checkpoint
    store/videos/<generation_key>.mp4                 generated clips
    store/samples/<sample_key>.json                   scored rows (what makes a generation "done")
    store/leases/<key>/<n>.json                       who is computing a key now (`sweep.results.leases`)
    <sweep>/plan.json, <sweep>/grid.parquet           what the sweep asked for
    <sweep>/samples/part-<trial>.parquet              result rows, one part file per trial
    <sweep>/inversions/part-<inversion_key>.parquet   one row per inversion

Everything under `store/` is content-addressed (the key is a hash of what produced it), so sweeps share it.
All paths given to `Store` methods are relative to the storage root, with `/` separators. Writes are
atomic: a file appears whole or not at all (local: temp file + fsync + rename; object stores: one put).
Temp files start with a dot, and readers only ever list `part-*.parquet`, so a torn write is never read.

Object stores (s3://bucket/prefix, gs://...) go through pyarrow.fs. Their credentials come from where the
cloud SDKs look for them (environment, `~/.aws`, the instance role on a cluster node), never from the URI: a
storage URI is copied into plan.json, the tables (`video_path`) and Tune's logs, so a URI holding a key or any
`?option=` is refused. Other settings come from the environment too, e.g. `AWS_ENDPOINT_URL` (or
`AWS_ENDPOINT_URL_S3`) for an S3-compatible server such as MinIO, and `AWS_REGION`/`AWS_DEFAULT_REGION`.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import shutil
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, Optional

import pyarrow.fs as pafs

if TYPE_CHECKING:
    import pyarrow as pa

STORE_DIR = "store"
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs")  # a single put is atomic there: no temp + rename needed
TMP_PREFIX = ".tmp-"

# How URIs become filesystems; a module attribute so tests can put an in-memory filesystem behind s3://.
_filesystem_from_uri = pafs.FileSystem.from_uri


def normalize_uri(uri: str | os.PathLike) -> str:
    """Local paths become absolute paths (file:// is stripped); other URIs are kept as they are (no trailing /).

    Raises ValueError for a URI with credentials (`s3://KEY:SECRET@bucket`) or options (`?endpoint_override=`).
    """
    text = str(uri)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if "://" in text:
        check_uri(text)
        return text.rstrip("/")
    return os.path.abspath(os.path.expanduser(text))


def check_uri(uri: str) -> None:
    """Refuse what must not travel with a storage URI (it is written into plans, tables and logs)."""
    scheme, rest = uri.split("://", 1)
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        raise ValueError(
            f"storage URI {scheme}://...@{authority.rsplit('@', 1)[1]}/... holds credentials; remove them: "
            "credentials come from the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE) or "
            "the instance role, never from the URI")
    if "?" in rest:
        raise ValueError(
            f"storage URI {scheme}://{rest.split('?', 1)[0]} has options ('?...'); give the bare URI and set "
            "options in the environment instead (e.g. AWS_ENDPOINT_URL for an S3-compatible server, AWS_REGION)")


class FileEntry(NamedTuple):
    """A file as a listing shows it: its identity for the table reader (a rewritten file changes size or time)."""

    name: str
    size: int
    mtime_ns: int


class Store:
    """Paths, atomic writes and cache look-ups under one storage root."""

    def __init__(self, uri: str | os.PathLike):
        self.uri = normalize_uri(uri)
        self.scheme = self.uri.split("://", 1)[0].lower() if "://" in self.uri else "file"
        self._fs: Optional[pafs.FileSystem] = None
        self._root: Optional[str] = None

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __reduce__(self):  # pickles as its URI (the filesystem handle is recreated lazily on the worker)
        return (Store, (self.uri,))

    # -- filesystem ---------------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def fs(self) -> pafs.FileSystem:
        # Lazy: resolving an S3 URI talks to the network (region lookup), so don't do it in __init__.
        if self._fs is None:
            if self.is_local:
                self._fs, self._root = pafs.LocalFileSystem(), self.uri
            else:
                self._fs, self._root = _filesystem_from_uri(self.uri)
                self._root = self._root.rstrip("/")
        return self._fs

    @property
    def root(self) -> str:
        self.fs  # noqa: B018 - resolves root
        assert self._root is not None
        return self._root

    def tune_storage(self, rel: str) -> tuple[str, Optional[pafs.FileSystem]]:
        """(storage_path, storage_filesystem) for Tune's RunConfig, so Tune writes under `rel` of this store."""
        if self.is_local:
            return str(Path(self.uri, rel)), None
        return self.abspath(rel), self.fs

    def abspath(self, rel: str) -> str:
        """Path of `rel` inside the filesystem (what pyarrow.fs calls take)."""
        return posixpath.join(self.root, rel) if rel else self.root

    def uri_of(self, rel: str) -> str:
        """Full URI (or absolute local path) of `rel`: what to print or hand to another process."""
        return posixpath.join(self.uri, rel) if rel else self.uri

    def local_path(self, rel: str) -> Optional[Path]:
        """The local file for `rel` when the store is local, else None (use `download`)."""
        return Path(self.uri, rel) if self.is_local else None

    # -- layout -------------------------------------------------------------------------------------

    @staticmethod
    def ddim_path(ddim_key: str) -> str:
        return f"{STORE_DIR}/ddim/{ddim_key}.safetensors"

    @staticmethod
    def inversion_dir(inversion_key: str) -> str:
        return f"{STORE_DIR}/inversions/{inversion_key}"

    @staticmethod
    def inversion_step_path(inversion_key: str, step: int) -> str:
        return f"{STORE_DIR}/inversions/{inversion_key}/step-{int(step)}.safetensors"

    @staticmethod
    def inversion_meta_path(inversion_key: str) -> str:
        return f"{STORE_DIR}/inversions/{inversion_key}/meta.json"

    @staticmethod
    def video_path(generation_key: str) -> str:
        return f"{STORE_DIR}/videos/{generation_key}.mp4"

    @staticmethod
    def sample_path(sample_key: str) -> str:
        return f"{STORE_DIR}/samples/{sample_key}.json"

    @staticmethod
    def part_path(sweep: str, table: str, part: str) -> str:
        return f"{sweep}/{table}/part-{part}.parquet"

    @staticmethod
    def plan_path(sweep: str) -> str:
        return f"{sweep}/plan.json"

    @staticmethod
    def grid_path(sweep: str) -> str:
        return f"{sweep}/grid.parquet"

    # -- basic operations ---------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        if self.is_local:
            return Path(self.uri, rel).exists()
        return self.fs.get_file_info(self.abspath(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        if self.is_local:
            return Path(self.uri, rel).read_bytes()
        with self.fs.open_input_stream(self.abspath(rel)) as f:
            return f.read()

    def write_bytes_atomic(self, rel: str, data: bytes) -> str:
        """Write `data` to `rel` so that readers see the old file, or the whole new one. Returns `rel`."""
        if self.is_local:
            target, tmp = self._local_temp(rel, data)
            try:
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            return rel
        target = self.abspath(rel)
        if self.scheme in OBJECT_STORE_SCHEMES:  # an object appears only when its upload completes
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return rel
        parent, name = posixpath.split(target)
        self.fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}")
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, target)
        return rel

    def create_bytes_exclusive(self, rel: str, data: bytes) -> str:
        """Write `rel` whole, unless it exists (FileExistsError, nothing written); race-free across processes
        and machines.

        Local: the bytes go to a temp file first and are hard-linked to their name (`link` fails when the name is
        taken). Where the filesystem has no hard links, an O_EXCL create of the name is used instead (still
        race-free; a reader may meet it half-written). S3: a conditional put (`If-None-Match: *`, through boto3,
        which reads the same environment as pyarrow: credentials, AWS_ENDPOINT_URL, region)."""
        if self.scheme == "s3":
            return self._s3_put_if_absent(rel, data)
        if not self.is_local:
            raise NotImplementedError(f"exclusive create on {self.scheme}:// storage is not supported (local "
                                      "folders and s3:// are)")
        target, tmp = self._local_temp(rel, data)
        try:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise
            except OSError:  # no hard links here (some network/FUSE filesystems)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
        finally:
            tmp.unlink(missing_ok=True)
        return rel

    def _s3_put_if_absent(self, rel: str, data: bytes) -> str:
        try:
            import boto3
            from botocore.exceptions import ClientError
        except ImportError:  # pragma: no cover - boto3 is a dependency
            raise NotImplementedError("exclusive create on s3:// needs boto3 (pip install boto3)") from None
        bucket, _, key = self.abspath(rel).partition("/")
        try:
            _s3_client(boto3).put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or \
                    exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                raise FileExistsError(self.uri_of(rel)) from None
            raise
        return rel

    def _local_temp(self, rel: str, data: bytes) -> tuple[Path, Path]:
        """(target path, a fsynced temp file beside it holding `data`): the bytes are on disk before a name
        points at them."""
        target = Path(self.uri, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{target.name}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target, tmp

    def upload(self, local_file: str | os.PathLike, rel: str) -> str:
        """Copy a local file (e.g. an mp4 or safetensors written by a library) into the store, atomically."""
        if self.is_local:
            target = Path(self.uri, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{target.name}")
            try:
                shutil.copyfile(local_file, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            return rel
        return self.write_bytes_atomic(rel, Path(local_file).read_bytes())

    def download(self, rel: str, dest: str | os.PathLike) -> Path:
        """A local copy of `rel` at `dest` (local stores: `dest` is not used, the file itself is returned)."""
        if self.is_local:
            return Path(self.uri, rel)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{dest.name}")
        try:
            tmp.write_bytes(self.read_bytes(rel))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def list_names(self, rel_dir: str, prefix: str = "", suffix: str = "") -> list[str]:
        """Names of the files directly in `rel_dir` (sorted; temp/hidden files excluded; [] if missing)."""
        return [f.name for f in self.list_files(rel_dir, prefix, suffix)]

    def list_files(self, rel_dir: str, prefix: str = "", suffix: str = "") -> list["FileEntry"]:
        """The files directly in `rel_dir` with their size and modification time, from one listing (one
        request on an object store): sorted by name; temp/hidden files excluded; [] if the folder is missing."""
        out = []
        if self.is_local:
            try:
                with os.scandir(Path(self.uri, rel_dir)) as it:
                    for e in it:
                        if e.is_file():
                            st = e.stat()
                            out.append(FileEntry(e.name, st.st_size, st.st_mtime_ns))
            except (FileNotFoundError, NotADirectoryError):
                return []
        else:
            infos = self.fs.get_file_info(pafs.FileSelector(self.abspath(rel_dir), allow_not_found=True))
            out = [FileEntry(posixpath.basename(i.path), i.size or 0, i.mtime_ns or 0)
                   for i in infos if i.type == pafs.FileType.File]
        return sorted((f for f in out if not f.name.startswith((".", "_"))
                       and f.name.startswith(prefix) and f.name.endswith(suffix)), key=lambda f: f.name)

    def delete(self, rel: str) -> None:
        """Remove a file (no error if it is already gone)."""
        try:
            if self.is_local:
                Path(self.uri, rel).unlink(missing_ok=True)
            else:
                self.fs.delete_file(self.abspath(rel))
        except FileNotFoundError:
            pass

    def list_dirs(self, rel_dir: str = "") -> list[str]:
        """Names of the sub-folders of `rel_dir` (sorted; hidden ones excluded)."""
        if self.is_local:
            folder = Path(self.uri, rel_dir)
            names = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        else:
            infos = self.fs.get_file_info(pafs.FileSelector(self.abspath(rel_dir), allow_not_found=True))
            names = [posixpath.basename(i.path.rstrip("/")) for i in infos if i.type == pafs.FileType.Directory]
        return sorted(n for n in names if not n.startswith((".", "_")))

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_bytes_atomic(rel, dumps(obj).encode())

    def write_parquet(self, rel: str, table: "pa.Table") -> str:
        """Write an Arrow table as one Parquet file, atomically (the one way tables become files here)."""
        return self.write_bytes_atomic(rel, parquet_bytes(table))

    def read_json(self, rel: str) -> Any:
        """The parsed JSON at `rel`, or None when there is no such file."""
        try:
            return json.loads(self.read_bytes(rel))
        except FileNotFoundError:
            return None

    # -- cache look-ups -----------------------------------------------------------------------------

    def has_ddim(self, ddim_key: str) -> bool:
        return self.exists(self.ddim_path(ddim_key))

    def inversion_steps(self, inversion_key: str) -> list[int]:
        """The checkpoint steps whose embeddings are stored for this inversion."""
        steps = []
        for name in self.list_names(self.inversion_dir(inversion_key), "step-", ".safetensors"):
            try:
                steps.append(int(name[len("step-"):-len(".safetensors")]))
            except ValueError:
                continue
        return sorted(steps)

    def has_inversion(self, inversion_key: str, steps: Iterable[int]) -> bool:
        """True when embeddings for every one of `steps` are stored (steps=[] asks nothing: True)."""
        wanted = set(int(s) for s in steps)
        return wanted <= set(self.inversion_steps(inversion_key)) if wanted else True

    def has_sample(self, sample_key: str) -> bool:
        return self.exists(self.sample_path(sample_key))

    def put_sample(self, sample_key: str, row: dict) -> str:
        """Cache a scored row (only "ok" rows should be cached: errors are retried on the next run)."""
        return self.write_json(self.sample_path(sample_key), row)

    def get_sample(self, sample_key: str) -> Optional[dict]:
        return self.read_json(self.sample_path(sample_key))


def _s3_client(boto3):
    """boto3's S3 client as pyarrow's is configured: the environment's endpoint (AWS_ENDPOINT_URL[_S3]) and region."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    return boto3.client("s3", endpoint_url=endpoint, region_name=region)


def parquet_bytes(table: "pa.Table") -> bytes:
    """An Arrow table as the bytes of one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def dumps(obj: Any) -> str:
    """JSON that also takes numpy arrays/scalars, datetimes and NaN (written as null)."""
    return json.dumps(_jsonable(obj), ensure_ascii=False, allow_nan=False)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars, without importing numpy
        return _jsonable(obj.tolist())
    return obj
