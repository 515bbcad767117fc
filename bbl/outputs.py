"""Where a command writes: one check that an output dir is new, empty or a run of the same kind (never anything
else), and one advisory lock per output so two writers never share it.

Every command that writes calls `claim_output` before any compute. It refuses, in one line and whatever
`--overwrite` says: a path under a file, a file, a directory that holds anything but a run of the kind the command
writes, a place it cannot write, and an output another live process holds. A *finished* run of the same kind is
refused unless `overwrite` names the intent; then only that run's own files (`OutputKind.owned`) are removed, so a
user's notes beside them survive. The lock is `fcntl.flock` on `OUT/.bbl.lock` (the pid, host and command inside
for the message): the kernel drops it when its holder dies, so a killed run never leaves a stale lock and a lock is
broken only when its holder is provably gone. Under torchrun only rank 0 takes it (one lock per job).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bbl.errors import BblError
from bbl.io import load_json

LOCK_FILE = ".bbl.lock"
"""The advisory lock's file, inside the output dir; removed on release."""


def run_finished(path) -> bool:
    """Whether `path` holds a finished bbl run: its `bbl_run.json` (written last) says complete. A missing or damaged
    file says not finished (the command that reads it names the damage)."""
    meta = _metadata(Path(path) / "bbl_run.json")
    return bool(meta.get("complete"))


def cache_finished(path) -> bool:
    """Whether `path` holds a complete local cache: its `zarr.json` attributes say complete (set last by the dump)."""
    meta = _metadata(Path(path) / "zarr.json")
    return bool((meta.get("attributes") or {}).get("complete"))


def _metadata(file: Path) -> dict:
    """The JSON object in `file`, or {} when it is missing or damaged."""
    try:
        return load_json(file) or {}
    except BblError:
        return {}


@dataclass(frozen=True)
class OutputKind:
    """What a command writes, as far as the output check needs to know.

    Attributes:
        noun: how messages name it ("model run", "logit cache", ...).
        markers: names (files or dirs) whose presence at the top of a dir says it is of this kind.
        finished: whether a dir of this kind holds a finished run (None: re-running it is how it continues, e.g.
            a study or pipeline workdir, and a finished one is re-reported, not replaced).
        owned: the top-level names a run of this kind writes (glob patterns), removed by `overwrite`.
        lock: whether one writer holds the output for the run (a sweep's workdir is shared by its workers).
    """

    noun: str
    markers: tuple[str, ...]
    finished: Callable[[Path], bool] | None = None
    owned: tuple[str, ...] = ()
    lock: bool = True


RESULTS_MARKERS = ("results.json", "results.md", "finetune.json", "finetune.md", "pipeline", "finetune-tasks")

KINDS: dict[str, OutputKind] = {
    "model": OutputKind(
        "model run", ("bbl_config.yaml", "bbl_run.json", "checkpoints"), run_finished,
        owned=("bbl_run.json", "bbl_config.yaml", "checkpoints", "partial-checkpoints", "word_checkpoints",
               "config.json", "generation_config.json", "model.safetensors", "model-*.safetensors",
               "model.safetensors.index.json", "pytorch_model*.bin", "training_args.bin", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")),
    "cache": OutputKind("logit cache", ("zarr.json",), cache_finished),
    "prepared": OutputKind("prepared dir", (".prepare_state.json", "manifest.json")),
    # eval and finetune share a results dir (the BabyLM pipeline's layout under pipeline/): either's files mark it
    "eval": OutputKind("results dir (bbl eval / bbl finetune)", RESULTS_MARKERS,
                       lambda p: (p / "results.json").is_file(), owned=("results.json", "results.md", "blimp.png")),
    "finetune": OutputKind("results dir (bbl eval / bbl finetune)", RESULTS_MARKERS,
                           lambda p: (p / "finetune.json").is_file(),
                           owned=("finetune.json", "finetune.md", "finetune-tasks")),
    "study": OutputKind("study workdir", ("study_state.json", "study.json")),
    "sweep": OutputKind("sweep workdir", ("sweep.db", "trials.json", "trials"), lock=False),
    "pipeline": OutputKind("pipeline workdir", ("pipeline_state.json",)),
    # `bbl export`: a git repo in the Hub's layout; its marker lives inside .git (never pushed), so any other git
    # repo is refused, and a killed export (marker written first) is replaced whole by --overwrite
    "export": OutputKind("bbl export repo", (".git/bbl_export.json",), lambda p: True,
                         owned=(".git", ".gitattributes", "*")),
}


def _first_file_above(path: Path) -> Path | None:
    """The first existing ancestor of `path` that is a file (not a dir), if any."""
    for parent in path.parents:
        if parent.exists():
            return parent if not parent.is_dir() else None
    return None


def check_output(path, kind: str, *, overwrite: bool = False, finished_ok: bool = False, option: str = "--out") -> str:
    """Check that `path` may receive a `kind` output; creates nothing.

    Args:
        path: the output dir (a local path; URLs are checked by the store that writes them).
        kind: a key of `KINDS`.
        overwrite: the user asked to replace a run of this kind (finished or not) found at `path`.
        finished_ok: a finished run is continued, not replaced (e.g. `--resume` of a training run).
        option: the option's spelling in messages.
    Returns:
        "new" (absent or empty), "continue" (an unfinished run of this kind, or a finished one that
        `finished_ok` allows), or "overwrite" (a run of this kind that `overwrite` replaces).
    Raises:
        BblError: a file at or above `path`, a dir holding anything but a `kind` run, or a finished run without
            `overwrite`; one line naming the path and the fix.
    """
    spec, path = KINDS[kind], Path(path)
    above = _first_file_above(path)
    if above is not None:
        raise BblError(f"{option} {path}: {above} is a file, not a directory; choose another {option}")
    if path.exists() and not path.is_dir():
        raise BblError(f"{option} {path}: is a file, not a directory; choose another {option}")
    if not path.is_dir():
        return "new"
    names = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE)
    if not names:
        return "new"
    if not any((path / m).exists() for m in spec.markers):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise BblError(f"{option} {path}: exists and is not a {spec.noun} (it holds {shown}); bbl writes a "
                       f"{spec.noun} only into a new or empty dir or one of its own: choose another {option}")
    if overwrite:
        return "overwrite"
    if spec.finished is not None and spec.finished(path) and not finished_ok:
        raise BblError(f"{option} {path}: holds a finished {spec.noun}; pass --overwrite to replace it (only its "
                       f"own files) or choose another {option}")
    return "continue"


def make_output_dir(path, *, option: str = "--out") -> Path:
    """Create an output dir (and its parents) for a kind without a lock (a sweep's shared workdir), after
    `check_output`; an unwritable place is one line.

    Raises:
        BblError: the dir cannot be created there (permission, read-only file system, ...).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BblError(f"{option} {path}: cannot write there ({e.strerror or e}); choose another {option}") from e
    return path


def lock_path(path, kind: str) -> Path:
    """Where the lock of an output lives: `OUT/.bbl.lock`, or beside a cache (`.NAME.bbl.lock`), since a file
    inside a Zarr store is not part of its hierarchy and zarr warns on every listing."""
    path = Path(path)
    return path.parent / f".{path.name}.bbl.lock" if kind == "cache" else path / LOCK_FILE


def remove_owned(path, kind: str) -> list[str]:
    """Remove a run's own top-level files (`OutputKind.owned`) from `path`; returns the names removed."""
    removed = []
    for pattern in KINDS[kind].owned:
        for p in sorted(Path(path).glob(pattern)):
            if p.name == LOCK_FILE:
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p.name)
    return removed


class OutputLock:
    """An exclusive advisory lock on an output dir, held from `acquire` to `release` (a context manager).

    The lock file holds {pid, host, started, command}; a second writer gets one line naming them. `flock` locks
    are dropped by the kernel when the holding process dies, so a lock never outlives its holder on a local disk
    (NFS may not honour it: documented, not enforced).

    Raises:
        BblError: the output is held by another live process, or the dir cannot be created or written.
    """

    def __init__(self, path, *, option: str = "--out", lock_file: Path | None = None):
        self.path, self.option = Path(path), option
        self.lock_file = Path(lock_file) if lock_file is not None else self.path / LOCK_FILE
        self.fd: int | None = None
        self.created = False

    def acquire(self) -> OutputLock:
        import fcntl

        lock = self.lock_file
        self.created = not lock.parent.exists()
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_holder(lock)
                    os.close(fd)
                    self._undo_create()
                    raise BblError(f"{self.option} {self.path}: in use by another bbl run ({holder}); wait for it "
                                   f"to finish, stop it, or choose another {self.option}") from None
                try:  # a holder that released and removed the file between our open and lock: take the new file
                    if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                        break
                except FileNotFoundError:
                    pass
                os.close(fd)
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv[:6])}
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(info) + "\n").encode())
        except OSError as e:
            self._undo_create()
            raise BblError(f"{self.option} {self.path}: cannot write there ({e.strerror or e}); choose another "
                           f"{self.option}") from e
        self.fd = fd
        return self

    def release(self) -> None:
        """Drop the lock and remove its file; a dir this lock created and nothing else wrote is removed too."""
        import fcntl

        if self.fd is None:
            return
        try:
            self.lock_file.unlink(missing_ok=True)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        self._undo_create()

    def _undo_create(self) -> None:
        folder = self.lock_file.parent
        if self.created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}: {info.get('command', '')}"


def claim_output(path, kind: str, *, overwrite: bool = False, finished_ok: bool = False, option: str = "--out",
                 lock: bool = True, log=print):
    """`check_output`, then (on the main process) the lock, and with `overwrite` the finished run's own files
    removed: the one call a writing command makes before any compute. Use as a context manager.

    Args:
        lock: False on ranks other than 0 of a multi-process job (one lock per job).
    Returns:
        An `OutputLock` (or a no-op context for a kind without a lock, or `lock=False`), not yet acquired.
    Raises:
        BblError: see `check_output`; `OutputLock.acquire` raises when another live run holds the output.
    """
    state = check_output(path, kind, overwrite=overwrite, finished_ok=finished_ok, option=option)
    if not (lock and KINDS[kind].lock):
        return contextlib.nullcontext()
    return _Claim(Path(path), kind, state, option, log)


class _Claim(OutputLock):
    def __init__(self, path: Path, kind: str, state: str, option: str, log):
        super().__init__(path, option=option, lock_file=lock_path(path, kind))
        self.kind, self.state, self.log = kind, state, log

    def acquire(self) -> _Claim:
        super().acquire()
        if self.state == "overwrite":
            # checked again under the lock: another run may have finished or changed it since the check
            check_output(self.path, self.kind, overwrite=True, option=self.option)
            removed = remove_owned(self.path, self.kind)
            if removed:
                self.log(f"{self.option} {self.path}: --overwrite: removed the finished run's "
                         f"{', '.join(removed[:6])}{', ...' if len(removed) > 6 else ''}")
        return self
