"""Where a cache lives: a local directory (the default) or any fsspec URL (`s3://`, `gs://`, `memory://`, ...).

Zarr v3 reads and writes object stores through fsspec (`zarr.storage.FsspecStore`); bbl only decides which one a
location names. Credentials and endpoints come from the usual environment of the fsspec backend (for S3 via
s3fs/botocore: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AWS_PROFILE`, ...); S3 needs
`pip install 'bbl[s3]'` (s3fs), GCS `gcsfs`. Every chunk is one object written whole, and a cache's `complete`
flag is written last, so resume and damage checks work on an object store as on disk (docs/cache-format.md).
"""

from __future__ import annotations

from pathlib import Path

from bbl.errors import BblError
from bbl.io import parse_json


def group_exists(location) -> bool:
    """Whether a zarr group is at `location`: a local path or URL (its `zarr.json`), or a zarr store object.

    Raises:
        BblError: the URL's store cannot be reached (see `has_zarr_group`).
    """
    if isinstance(location, Path | str):
        return has_zarr_group(location)
    import zarr

    try:
        zarr.open_group(store=location, mode="r")
        return True
    except Exception:  # zarr raises several types for "no group here"
        return False


def open_group(location, mode: str):
    """`zarr.open_group` of a cache at a local path, URL or store (mode "r" opens it read-only).

    Raises:
        BblError: no group there (names the dump-logits command that writes one).
    """
    import zarr

    if mode not in ("r", "r+"):
        return zarr.open_group(store=zarr_store(location, read_only=False), mode=mode)
    if not group_exists(location):
        raise BblError(f"{location}: no logit cache there; run `bbl dump-logits --cache {location}`")
    fix = damaged_metadata_fix(location)
    for source, data in metadata_documents(location):
        parse_json(data, source, fix=fix)
    try:
        return zarr.open_group(store=zarr_store(location, read_only=mode == "r"), mode=mode)
    except (ValueError, KeyError, TypeError) as e:  # JSON, but not zarr v3 metadata
        raise BblError(f"{location}: not a zarr v3 group ({type(e).__name__}: {str(e).splitlines()[0]}); {fix}") \
            from None


def damaged_metadata_fix(location) -> str:
    """What to do about a cache whose metadata (a `zarr.json`) is damaged: its settings and chunk map live there, so
    `bbl cache repair` cannot rebuild it; the dump is redone."""
    return (f"restore the file, or dump the cache again (`bbl dump-logits ... --cache {location} --overwrite`; "
            f"`bbl cache repair` needs this metadata)")


def metadata_documents(location) -> list[tuple[str, bytes]]:
    """(name, bytes) of every zarr.json of a cache at a local path or URL: the group's, then each array's. A store
    object (not a path or URL) has none listed here.

    Raises:
        BblError: the URL's store cannot be reached.
    """
    if is_url(location):
        fs, root = _filesystem(location)
        root = root.rstrip("/")
        try:
            paths = [f"{root}/zarr.json", *sorted(fs.glob(f"{root}/*/zarr.json"))]
            return [(f"{location.rstrip('/')}/{p[len(root) + 1:]}", fs.cat_file(p)) for p in paths if fs.exists(p)]
        except Exception as e:  # botocore/aiohttp errors have no common base; all mean "unreachable" here
            raise _unreachable(location, e) from e
    if not isinstance(location, str | Path):
        return []
    root = Path(location)
    return [(str(f), f.read_bytes()) for f in [root / "zarr.json", *sorted(root.glob("*/zarr.json"))] if f.is_file()]


def is_url(location) -> bool:
    """Whether `location` is a URL with a scheme (`s3://b/c.zarr`), not a filesystem path."""
    return isinstance(location, str) and "://" in location


def cache_location(value):
    """A CLI value as a cache location: URLs stay strings, anything else becomes a `Path`."""
    if value is None or not isinstance(value, str | Path):
        return value
    return value if is_url(value) else Path(value)


def _filesystem(url: str):
    """(fsspec filesystem, root path inside it) for a URL; a missing backend is a one-line error."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        scheme = url.split("://", 1)[0]
        hint = {"s3": "pip install 'bbl[s3]' (s3fs)", "gs": "pip install gcsfs", "gcs": "pip install gcsfs"}
        raise BblError(f"{url}: no fsspec backend for {scheme}:// ({e}); {hint.get(scheme, 'install it')}") from e
    except ValueError as e:
        raise BblError(f"{url}: not a storage URL fsspec knows ({e})") from e


def zarr_store(location, *, read_only: bool = False):
    """What `zarr.open_group(store=...)` takes: a local path as str, an `FsspecStore` for a URL, a store as is."""
    if is_url(location):
        import zarr

        _filesystem(location)  # a clear error for a missing backend, before zarr's
        store = zarr.storage.FsspecStore.from_url(location, read_only=read_only)
        # fsspec reuses one filesystem instance per process, with its listings cache: objects written or deleted
        # since an earlier open (by another process, a rank, or an operator) must not be hidden by it.
        store.fs.invalidate_cache()
        return store
    if isinstance(location, str | Path):
        return str(location)
    return location


def _unreachable(url: str, e: Exception) -> BblError:
    scheme = url.split("://", 1)[0]
    hint = ("check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and AWS_ENDPOINT_URL"
            if scheme in ("s3", "s3a") else "check the backend's credentials and endpoint")
    return BblError(f"{url}: cannot reach the store ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                    f"{hint}")


def has_zarr_group(location) -> bool:
    """Whether a zarr v3 group (its `zarr.json`) exists at a local path or URL.

    Raises:
        BblError: the URL's store cannot be reached (credentials, endpoint, network), in one line.
    """
    if is_url(location):
        fs, root = _filesystem(location)
        try:
            fs.invalidate_cache()
            return fs.exists(f"{root.rstrip('/')}/zarr.json")
        except Exception as e:  # botocore/aiohttp errors have no common base; all mean "unreachable" here
            raise _unreachable(location, e) from e
    return (Path(location) / "zarr.json").is_file()


def group_json(location) -> bytes | None:
    """The bytes of a group's `zarr.json` at a local path or URL, or None when absent."""
    if is_url(location):
        fs, root = _filesystem(location)
        path = f"{root.rstrip('/')}/zarr.json"
        return fs.cat_file(path) if fs.exists(path) else None
    file = Path(location) / "zarr.json"
    return file.read_bytes() if file.is_file() else None


def location_bytes(location) -> int:
    """Bytes stored under a local directory or a URL prefix."""
    if is_url(location):
        fs, root = _filesystem(location)
        return int(fs.du(root, total=True)) if fs.exists(root) else 0
    return sum(f.stat().st_size for f in Path(location).rglob("*") if f.is_file())


def claim_cache(location, *, overwrite: bool = False, lock: bool = True, log=print):
    """The output check and writer's lock of a cache about to be written (`bbl.outputs`), before any compute.

    A local path must be new, empty or a zarr store (a complete one is kept: the writer resumes it, refuses other
    settings without `overwrite`, and does nothing when it is complete); the lock is a sibling file
    `.NAME.bbl.lock` held for the dump. A URL's prefix must be empty or hold a zarr group; object stores have no
    advisory lock: the writer holds an object `NAME.bbl.lock` beside the store (`ObjectLock`).

    Returns:
        A context manager holding the lock (a no-op for URLs and for `lock=False`, e.g. ranks > 0).
    Raises:
        BblError: a local dir or URL prefix that holds something else, a path under a file, an unwritable place,
            a cache another live process is writing.
    """
    import contextlib

    from bbl.outputs import claim_output

    if is_url(location):
        fs, root = _filesystem(location)
        try:
            fs.invalidate_cache()
            entries = fs.ls(root.rstrip("/"), detail=False) if fs.exists(root.rstrip("/")) else []
        except Exception as e:  # botocore/aiohttp errors have no common base; all mean "unreachable" here
            raise _unreachable(location, e) from e
        if entries and not any(str(e).rstrip("/").endswith("/zarr.json") for e in entries):
            raise BblError(f"--cache {location}: holds objects that are not a zarr store; bbl writes a cache only to "
                           f"an empty prefix or a cache of its own: choose another --cache")
        return ObjectLock(location) if lock else contextlib.nullcontext()
    return claim_output(Path(location), "cache", overwrite=overwrite, finished_ok=True, option="--cache", lock=lock,
                        log=log)


def cache_lock(location, *, option: str = "CACHE"):
    """The writer's lock of an existing local cache (`.NAME.bbl.lock` beside it), for a command that modifies it
    in place (`cache repair`); a no-op context for URLs and store objects.

    Raises:
        BblError: another live process (a dump, a repair) holds it.
    """
    import contextlib

    from bbl.outputs import OutputLock, lock_path

    if isinstance(location, str | Path) and not is_url(location):
        return OutputLock(Path(location), option=option, lock_file=lock_path(location, "cache"))
    return ObjectLock(location, option=option) if is_url(location) else contextlib.nullcontext()


class ObjectLock:
    """The writer's lock of a cache on an object store: an object `URL.bbl.lock` beside the store holding
    {pid, host, started}, created on entry and deleted on exit (a context manager).

    Object stores have no advisory locks, so a lock left by a killed writer stays; it is broken only when its
    holder is provably gone (same host, pid no longer alive). A holder on another host that died leaves a lock the
    user removes (the message names it). Creation is check-then-write: two writers starting in the same instant
    can both pass (S3 offers no portable create-if-absent through fsspec); a local disk's `flock` has no such gap.

    Raises:
        BblError: another live writer (or one on another host) holds it; the store cannot be reached.
    """

    def __init__(self, url: str, *, option: str = "--cache"):
        self.url, self.option = url.rstrip("/"), option
        self.fs, root = _filesystem(url)
        self.key = f"{root.rstrip('/')}.bbl.lock"
        self.held = False

    def __enter__(self) -> ObjectLock:
        import json
        import os
        import socket
        import time

        host = socket.gethostname()
        try:
            self.fs.invalidate_cache()
            if self.fs.exists(self.key):
                try:
                    info = json.loads(self.fs.cat_file(self.key) or b"{}")
                except ValueError:
                    info = {}
                if not (info.get("host") == host and not _pid_alive(info.get("pid"))):
                    raise BblError(f"{self.option} {self.url}: in use by another bbl run (pid {info.get('pid')} on "
                                   f"{info.get('host')} since {info.get('started')}); wait for it, or if that run is "
                                   f"gone delete {self.url}.bbl.lock")
            info = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            self.fs.pipe_file(self.key, json.dumps(info).encode())
        except BblError:
            raise
        except Exception as e:  # botocore/aiohttp errors have no common base; all mean "unreachable" here
            raise _unreachable(self.url, e) from e
        self.held = True
        return self

    def __exit__(self, *exc) -> None:
        if self.held:
            self.fs.rm_file(self.key)
            self.held = False


def _pid_alive(pid) -> bool:
    """Whether a process with this pid runs on this host (a zombie counts as gone)."""
    import os

    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True
