"""Where a command writes: one check that an output dir is new, empty or a run of the same kind (never anything
else), one advisory lock per output so two writers never share it, and a manifest of the files each run wrote.

Every command that writes calls `claim_output` before any compute. It refuses, in one line and whatever
`--overwrite` says: a path under a file, a file, a directory that holds anything but a run of the kind the command
writes (a teacher is not a distilled student), a place it cannot write, and an output another live process holds.
A *finished* run of the same kind is refused unless `overwrite` names the intent; then only the files that run
wrote are removed, so a user's notes beside them (or inside its `checkpoints/`) survive.

The manifest (`OUT/.bbl_files.json`, `MANIFEST_FILE`) records, per kind of output in the dir, the files its runs
wrote. A claim snapshots the dir's files; what appears while the claim holds the lock is the run's. A killed run
cannot record its files, so the next claim (which holds the lock, so the killed holder is gone) counts what
appeared since the killed run's snapshot as that run's. A dir written before manifests existed is adopted at its
first claim by the names bbl gives its files (`OutputKind.owned`). The lock is `fcntl.flock` on `OUT/.bbl.lock`
(the pid, host and command inside for the message): the kernel drops it when its holder dies, so a killed run never
leaves a stale lock and a lock is broken only when its holder is provably gone. Under torchrun only rank 0 takes it
(one lock per job).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bbl.errors import BblError
from bbl.io import atomic_write_json, load_json

LOCK_FILE = ".bbl.lock"
"""The advisory lock's file, inside the output dir; removed on release."""
MANIFEST_FILE = ".bbl_files.json"
"""Inside an output dir of a kind with a manifest: {"format": 1, "outputs": {kind: {"files": [relative paths],
"writing": null or {"pid", "before": [the dir's files when the claim began]}}}}."""
MANIFEST_FORMAT = 1


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
        meta = load_json(file) or {}
    except BblError:
        return {}
    return meta if isinstance(meta, dict) else {}


def is_eval_record(file: Path) -> bool:
    """Whether `file` is one of `bbl eval`'s per-model JSON files ({model, paths, tasks, ...}), the first file a
    killed evaluation may leave."""
    if file.suffix != ".json" or not file.is_file():
        return False
    meta = _metadata(file)
    return {"model", "paths", "tasks"} <= set(meta)


@dataclass(frozen=True)
class OutputKind:
    """What a command writes, as far as the output check needs to know.

    Attributes:
        noun: how messages name it ("teacher run (bbl train-teacher)", "logit cache", ...).
        markers: names (files or dirs) whose presence at the top of a dir says it is of this kind (or of its
            `family`), in a dir without a manifest.
        finished: whether a dir of this kind holds a finished run (None: re-running it is how it continues, e.g.
            a study or pipeline workdir, and a finished one is re-reported, not replaced).
        owned: what a run of this kind wrote before manifests existed: regexes matched against the whole relative
            path of each file (with a manifest: patterns of the old glob over the top level, `remove_owned`).
        lock: whether one writer holds the output for the run (a sweep's workdir is shared by its workers).
        family: kinds of one family share markers (every model run has `bbl_run.json`); a dir without a manifest
            is told apart within the family by `legacy_kind`.
        shares: other kinds that may write into the same dir (eval and finetune: one results dir).
        manifest: whether runs of this kind keep the manifest of their files (`MANIFEST_FILE`).
        recognise: a dir holding a file for which this returns True is of this kind too (eval's per-model JSON).
        refuse: (path, option) -> a problem with `path` this kind alone has (a cache's array given for the cache),
            or None.
    """

    noun: str
    markers: tuple[str, ...]
    finished: Callable[[Path], bool] | None = None
    owned: tuple[str, ...] = ()
    lock: bool = True
    family: str | None = None
    shares: tuple[str, ...] = ()
    manifest: bool = False
    recognise: Callable[[Path], bool] | None = None
    refuse: Callable[[Path, str], str | None] | None = None


def _zarr_node(path: Path) -> str | None:
    """The node type ("group", "array") a `zarr.json` in `path` declares, or None."""
    return _metadata(path / "zarr.json").get("node_type") if (path / "zarr.json").is_file() else None


def inside_a_store(path: Path, option: str) -> str | None:
    """A cache path that names an array or group inside a Zarr store (`ensemble.zarr/topk_ids`): the store is what
    `--cache` means, and a dump there would nest a store in a store."""
    if _zarr_node(path) == "array":
        return f"is an array of a Zarr store, not a logit cache; pass the store itself ({option} {path.parent})"
    for parent in path.parents:
        if _zarr_node(parent) == "group":
            return f"is inside the Zarr store {parent}; pass the store itself ({option} {parent}) or a path outside it"
    return None


RESULTS_MARKERS = ("results.json", "results.md", "finetune.json", "finetune.md", "pipeline", "finetune-tasks")
MODEL_MARKERS = ("bbl_config.yaml", "bbl_run.json", "checkpoints")
MODEL_OWNED = (r"bbl_run\.json", r"bbl_config\.yaml", r"metrics\.jsonl", r"config\.json", r"generation_config\.json",
               r"model(-\d+-of-\d+)?\.safetensors", r"model\.safetensors\.index\.json", r"pytorch_model.*\.bin",
               r"training_args\.bin", r"tokenizer\.json", r"tokenizer_config\.json", r"special_tokens_map\.json",
               r"chat_template\.jinja", r"checkpoints/checkpoint-\d+/[^/]+",
               r"partial-checkpoints/checkpoint-\d+(-\d+)?/[^/]+", r"word_checkpoints/chck_\d+M(\.tmp)?/[^/]+")
"""What a bbl training run wrote before manifests: the HF model dir's files, the Trainer's `checkpoint-N` dirs,
the partial ones set aside, the word checkpoints (a user's `checkpoints/mine.txt` matches none)."""
EVAL_OWNED = (r"results\.json", r"results\.md", r"blimp\.png", r"pipeline/[^/]+/[^/]+/zero_shot/.+")
FINETUNE_OWNED = (r"finetune\.json", r"finetune\.md", r"finetune-tasks/[^/]+/.+", r"pipeline/[^/]+/[^/]+/finetune/.+")
RESULTS_NOUN = "results dir (bbl eval / bbl finetune)"


def _model_kind(noun: str) -> OutputKind:
    return OutputKind(noun, MODEL_MARKERS, run_finished, owned=MODEL_OWNED, family="model", manifest=True)


MODEL_KINDS = ("teacher", "student_baseline", "student_distilled", "sweep_trial")
"""The kinds of a training run, as `train_lm(kind=...)` records them in `bbl_run.json`: one never replaces another."""

KINDS: dict[str, OutputKind] = {
    "teacher": _model_kind("model run (teacher, bbl train-teacher)"),
    "student_baseline": _model_kind("model run (baseline student, bbl train-student)"),
    "student_distilled": _model_kind("model run (distilled student, bbl distill)"),
    "sweep_trial": _model_kind("model run (sweep trial)"),
    # any model run, whatever its kind (a tool that only reads or holds one)
    "model": OutputKind("model run", MODEL_MARKERS, run_finished, owned=MODEL_OWNED, family="model", manifest=True,
                        shares=MODEL_KINDS),
    "cache": OutputKind("logit cache", ("zarr.json",), cache_finished, refuse=inside_a_store),
    "prepared": OutputKind("prepared dir", (".prepare_state.json", "manifest.json")),
    # eval and finetune share a results dir (the BabyLM pipeline's layout under pipeline/): either's files mark it
    "eval": OutputKind(RESULTS_NOUN, RESULTS_MARKERS, lambda p: (p / "results.json").is_file(), owned=EVAL_OWNED,
                       family="results", shares=("finetune",), manifest=True, recognise=is_eval_record),
    "finetune": OutputKind(RESULTS_NOUN, RESULTS_MARKERS, lambda p: (p / "finetune.json").is_file(),
                           owned=FINETUNE_OWNED, family="results", shares=("eval",), manifest=True,
                           recognise=is_eval_record),
    "study": OutputKind("study workdir", ("study_state.json", "study.json")),
    "sweep": OutputKind("sweep workdir", ("sweep.db", "trials.json", "trials"), lock=False),
    "pipeline": OutputKind("pipeline workdir", ("pipeline_state.json",)),
    # `bbl export`: a git repo in the Hub's layout; its marker lives inside .git (never pushed), so any other git
    # repo is refused, and a killed export (marker written first) is replaced whole by --overwrite (bbl wrote every
    # file of its work tree: `bbl.hub.export` empties it before each revision)
    "export": OutputKind("bbl export repo", (".git/bbl_export.json",), lambda p: True,
                         owned=(".git", ".gitattributes", "*")),
}


def _first_file_above(path: Path) -> Path | None:
    """The first existing ancestor of `path` that is a file (not a dir), if any."""
    for parent in path.parents:
        if parent.exists():
            return parent if not parent.is_dir() else None
    return None


def _files(path: Path) -> list[str]:
    """The relative (posix) path of every file and symlink under `path`, its lock and manifest left out."""
    found = []
    for root, dirs, files in os.walk(path):
        rel = Path(root).relative_to(path)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            found.append((rel / name).as_posix())
    return sorted(set(found) - {LOCK_FILE, MANIFEST_FILE})


def read_manifest(path, *, option: str = "--out") -> dict | None:
    """The manifest of the output dir `path` (`MANIFEST_FILE`), or None when it has none.

    Raises:
        BblError: a damaged manifest, naming it and the fix.
    """
    file = Path(path) / MANIFEST_FILE
    if not file.exists() and not file.is_symlink():
        return None
    fix = f"delete it (bbl then knows its runs' files by their names) or choose another {option}"
    meta = load_json(file, fix=fix)
    outputs = meta.get("outputs") if isinstance(meta, dict) else None
    if not isinstance(outputs, dict) or not all(
            k in KINDS and isinstance(v, dict) and isinstance(v.get("files"), list)
            and all(isinstance(f, str) for f in v["files"]) for k, v in outputs.items()):
        raise BblError(f"{file}: not a bbl manifest of an output's files; {fix}")
    return meta


def legacy_kind(path: Path) -> str:
    """The kind of a model run without a manifest: the `kind` its `bbl_run.json` records, else "model" (unknown:
    an unfinished run of a bbl release before manifests)."""
    kind = _metadata(path / "bbl_run.json").get("kind")
    return kind if kind in MODEL_KINDS else "model"


def _kinds_in(path: Path, kind: str, manifest: dict | None) -> set[str]:
    """The kinds of output `path` holds, as far as a `kind` output's check can tell: the manifest's, else what the
    markers of `kind`'s family say (a model run's kind by `legacy_kind`; "results" for a results dir)."""
    if manifest is not None and manifest["outputs"]:
        return set(manifest["outputs"])
    spec = KINDS[kind]
    marked = any((path / m).exists() for m in spec.markers) or (
        spec.recognise is not None and any(spec.recognise(p) for p in path.iterdir()))
    if not marked:
        return set()
    return {legacy_kind(path)} if spec.family == "model" else {spec.family or kind}


def _fits(found: str, kind: str) -> bool:
    """Whether a dir holding a `found` output may receive a `kind` output."""
    spec = KINDS[kind]
    # `found` == the family: a run of unknown kind within it (before manifests); "model" asked: any model run
    return found in (kind, spec.family, *spec.shares) or (kind == "model" and found in MODEL_KINDS)


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
        BblError: a file at or above `path`, a name the file system refuses, a dir holding anything but a `kind`
            run (a run of another kind included, whatever `overwrite` says), a damaged manifest, or a finished run
            without `overwrite`; one line naming the path and the fix.
    """
    spec, path = KINDS[kind], Path(path)
    try:
        above = _first_file_above(path)
        exists, is_dir = path.exists(), path.is_dir()
        if is_dir:
            names = sorted(p.name for p in path.iterdir() if p.name not in (LOCK_FILE, MANIFEST_FILE))
    except OSError as e:  # a name too long, a dir we may not list, ...
        raise BblError(f"{option} {_short(path)}: cannot use that path ({e.strerror or e}); choose another "
                       f"{option}") from None
    if above is not None:
        raise BblError(f"{option} {path}: {above} is a file, not a directory; choose another {option}")
    if exists and not is_dir:
        raise BblError(f"{option} {path}: is a file, not a directory; choose another {option}")
    if spec.refuse is not None and (problem := spec.refuse(path, option)):
        raise BblError(f"{option} {path}: {problem}")
    if not is_dir:
        return "new"
    manifest = read_manifest(path, option=option) if spec.manifest else None
    if not names and not (manifest and manifest["outputs"]):
        return "new"
    found = _kinds_in(path, kind, manifest)
    if not found:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise BblError(f"{option} {path}: exists and is not a {spec.noun} (it holds {shown}); bbl writes a "
                       f"{spec.noun} only into a new or empty dir or one of its own: choose another {option}")
    other = sorted(k for k in found if not _fits(k, kind))
    if other:
        raise BblError(f"{option} {path}: holds a {KINDS[other[0]].noun}, not a {spec.noun}; bbl replaces a run only "
                       f"with one of its own kind, whatever --overwrite says: choose another {option}")
    if overwrite:
        return "overwrite"
    if spec.finished is not None and spec.finished(path) and not finished_ok:
        raise BblError(f"{option} {path}: holds a finished {spec.noun}; pass --overwrite to replace it (only its "
                       f"own files) or choose another {option}")
    return "continue"


def _short(path: Path) -> str:
    """A path for a message: a name past 80 characters shown by its start and end."""
    text = str(path)
    return text if len(text) <= 120 else f"{text[:60]}...{text[-40:]} ({len(text)} characters)"


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
        raise BblError(f"{option} {_short(path)}: cannot write there ({e.strerror or e}); choose another "
                       f"{option}") from e
    return path


def lock_path(path, kind: str) -> Path:
    """Where the lock of an output lives: `OUT/.bbl.lock`, or beside a cache (`.NAME.bbl.lock`), since a file
    inside a Zarr store is not part of its hierarchy and zarr warns on every listing."""
    path = Path(path)
    return path.parent / f".{path.name}.bbl.lock" if kind == "cache" else path / LOCK_FILE


def remove_owned(path, kind: str) -> list[str]:
    """Remove the top-level files of a kind without a manifest that `OutputKind.owned` names (glob patterns: an
    export's work tree, which bbl wrote whole); returns the names removed."""
    removed = []
    for pattern in KINDS[kind].owned:
        for p in sorted(Path(path).glob(pattern)):
            if p.name == LOCK_FILE:
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p.name)
    return removed


def _legacy_files(path: Path, kind: str, files: list[str]) -> list[str]:
    """Of `files`, those a `kind` run wrote before manifests (`OutputKind.owned` regexes, `recognise`)."""
    spec = KINDS[kind]
    patterns = [re.compile(p) for p in spec.owned]
    return [f for f in files if any(p.fullmatch(f) for p in patterns)
            or ("/" not in f and spec.recognise is not None and spec.recognise(path / f))]


def _settle(entry: dict, files: set[str]) -> None:
    """Count what appeared since an entry's claim began (its `writing` snapshot) as the entry's own; forget its
    files that are gone (rotated checkpoints)."""
    writing = entry.get("writing")
    own = set(entry["files"])
    if isinstance(writing, dict) and isinstance(writing.get("before"), list):
        own |= files - set(writing["before"])
    entry["files"], entry["writing"] = sorted(own & files), None


def _write_manifest(path: Path, manifest: dict) -> None:
    if manifest["outputs"]:
        atomic_write_json(path / MANIFEST_FILE, manifest)
    else:
        (path / MANIFEST_FILE).unlink(missing_ok=True)


def _remove_files(path: Path, rels) -> list[str]:
    """Remove these files (relative to `path`), then every dir they leave empty; returns what was removed."""
    removed = []
    for rel in rels:
        p = path / rel
        if p.is_symlink() or p.is_file():
            p.unlink()
            removed.append(rel)
    parents = {d for rel in removed for d in Path(rel).parents if d != Path(".")}
    for d in sorted(parents, key=lambda d: len(d.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: a file that is not the run's is there
            (path / d).rmdir()
    return removed


def begin_writing(path, kind: str, *, overwrite: bool = False, option: str = "--out", log=print) -> None:
    """Under the output's lock: settle the files of earlier claims that did not end (a killed run), adopt a dir
    written before manifests, with `overwrite` remove the `kind` run's own files, then snapshot the dir so that
    what appears until `end_writing` is this run's."""
    path = Path(path)
    manifest = read_manifest(path, option=option) or {"format": MANIFEST_FORMAT, "outputs": {}}
    files = set(_files(path))
    outputs = manifest["outputs"]
    if not outputs:  # a dir of bbl's from before manifests: its runs' files by their names
        spec = KINDS[kind]
        adopt = ([legacy_kind(path) if kind == "model" else kind] if spec.family == "model" else [kind, *spec.shares])
        for k in adopt:
            if own := _legacy_files(path, k, sorted(files)):
                outputs[k] = {"files": own, "writing": None}
    for entry in outputs.values():
        _settle(entry, files)
    if KINDS[kind].family == "model" and kind != "model" and "model" in outputs:  # a run of unknown kind: this one
        entry = outputs.setdefault(kind, {"files": []})
        entry["files"] = sorted({*entry["files"], *outputs.pop("model")["files"]})
    if overwrite and kind in outputs:
        removed = _remove_files(path, outputs.pop(kind)["files"])
        if removed:
            tops = list(dict.fromkeys(r.split("/")[0] + ("/" if "/" in r else "") for r in removed))
            log(f"{option} {path}: --overwrite: removed the earlier run's {len(removed)} file(s) "
                f"({', '.join(tops[:6])}{', ...' if len(tops) > 6 else ''})")
        files = set(_files(path))
    entry = outputs.setdefault(kind, {"files": []})
    entry["writing"] = {"pid": os.getpid(), "before": sorted(files)}
    _write_manifest(path, manifest)


def end_writing(path, kind: str, *, option: str = "--out") -> None:
    """Under the output's lock, at the end of a claim: record what appeared since `begin_writing` as the `kind`
    run's; a claim that wrote nothing leaves no manifest entry (and no manifest when it was the only one)."""
    path = Path(path)
    manifest = read_manifest(path, option=option)
    if manifest is None or kind not in manifest["outputs"]:
        return
    entry = manifest["outputs"][kind]
    _settle(entry, set(_files(path)))
    if not entry["files"]:
        del manifest["outputs"][kind]
    _write_manifest(path, manifest)


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
        self.created: list[Path] = []  # the dirs acquire created, deepest first (removed again when left empty)

    def acquire(self) -> OutputLock:
        import fcntl

        lock = self.lock_file
        try:
            self.created = [d for d in (lock.parent, *lock.parent.parents) if not d.exists()]
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
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": _command()}
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(info) + "\n").encode())
        except OSError as e:
            self._undo_create()
            raise BblError(f"{self.option} {_short(self.path)}: cannot write there ({e.strerror or e}); choose "
                           f"another {self.option}") from e
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
        for folder in self.created:  # deepest first; one that holds anything stops the climb
            try:
                folder.rmdir()
            except OSError:
                break
        self.created = []

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _command() -> str:
    """The command line of this process as a user would type it (`bbl ...`), whole (a message quotes it)."""
    import shlex

    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("__main__.py", "bbl"):
        argv[0] = "bbl"
    return shlex.join(argv)


def _read_holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}: {info.get('command', '')}"


def claim_output(path, kind: str, *, overwrite: bool = False, finished_ok: bool = False, option: str = "--out",
                 lock: bool = True, log=print):
    """`check_output`, then (on the main process) the lock, and with `overwrite` the earlier run's own files
    removed: the one call a writing command makes before any compute. Use as a context manager; a kind with a
    manifest records the files written while it is held (`begin_writing` / `end_writing`).

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
        self.writing = False

    def acquire(self) -> _Claim:
        super().acquire()
        try:
            # checked again under the lock: another run may have finished or changed it since the check
            check_output(self.path, self.kind, overwrite=self.state == "overwrite", finished_ok=True,
                         option=self.option)
            if KINDS[self.kind].manifest:
                begin_writing(self.path, self.kind, overwrite=self.state == "overwrite", option=self.option,
                              log=self.log)
                self.writing = True
            elif self.state == "overwrite":
                removed = remove_owned(self.path, self.kind)
                if removed:
                    self.log(f"{self.option} {self.path}: --overwrite: removed the finished run's "
                             f"{', '.join(removed[:6])}{', ...' if len(removed) > 6 else ''}")
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        try:
            if self.writing and self.fd is not None:
                self.writing = False
                end_writing(self.path, self.kind, option=self.option)
        finally:
            super().release()
