"""`bbl data verify`: which BabyLM release a corpus dir is, and its files against that release (git blob SHA-1).

Release manifests are data files of `<git blob sha1> <relative path>` lines (what `git hash-object FILE` prints),
one per release: `bbl/releases/babylm-2023.txt` ships (the 2023 release's 30 files, 10 sources x train/dev/test);
more can be given with `--manifest FILE` (its name is the file's stem), e.g. for the 2024 release.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bbl.errors import BblError
from bbl.io import git_blob_sha1

CORPUS_SUFFIXES = (".train", ".dev", ".test", ".txt", ".parquet", ".jsonl")


def parse_manifest(text: str, source: str) -> dict[str, str]:
    """{relative path: git blob SHA-1} from manifest text.

    Raises:
        BblError: a line that is not `<40 hex digits> <path>` (names the source and line).
    """
    out = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 40 or any(c not in "0123456789abcdef" for c in parts[0]):
            raise BblError(f"{source}:{lineno}: expected '<git blob sha1> <path>' (as `git hash-object` prints)")
        if "/" not in parts[1].strip("/"):
            raise BblError(f"{source}:{lineno}: {parts[1]} has no split dir; write paths as SPLIT_DIR/FILE, e.g. "
                           f"babylm_10M/cbt.train")
        out[parts[1]] = parts[0]
    if not out:
        raise BblError(f"{source}: no '<git blob sha1> <path>' line; write one per file of the release (what "
                       f"`git hash-object FILE` prints, then its path)")
    return out


def release_manifests(extra=()) -> dict[str, dict[str, str]]:
    """{release name: manifest}: the shipped releases, then each `extra` manifest file (name: its stem)."""
    releases = {}
    for f in sorted(resources.files("bbl").joinpath("releases").iterdir(), key=lambda f: f.name):
        if f.name.endswith(".txt"):
            releases[f.name[:-4]] = parse_manifest(f.read_text(), f"bbl/releases/{f.name}")
    for path in map(Path, extra):
        if not path.is_file():
            raise BblError(f"--manifest {path}: file not found; pass a file of '<git blob sha1> <path>' lines")
        try:
            text = path.read_bytes().decode()
        except UnicodeDecodeError:
            raise BblError(f"--manifest {path}: not a text file (not UTF-8); pass a file of '<git blob sha1> <path>' "
                           f"lines") from None
        releases[path.stem] = parse_manifest(text, f"--manifest {path}")
    return releases


def official_manifest() -> dict[str, str]:
    """{relative path, e.g. 'babylm_10M/cbt.train': git blob SHA-1} of the official BabyLM 2023 release."""
    return release_manifests()["babylm-2023"]


def identify_release(directory: Path, releases: dict[str, dict[str, str]]) -> list[dict]:
    """How many of each release's files are present, byte for byte, anywhere under `directory` (by content, so
    a renamed dir still matches); best match first. Rows: release, identical, files."""
    found = {git_blob_sha1(p) for p in Path(directory).rglob("*") if p.is_file() and p.suffix in CORPUS_SUFFIXES}
    rows = [{"release": name, "identical": sum(sha in found for sha in m.values()), "files": len(m)}
            for name, m in releases.items()]
    return sorted(rows, key=lambda r: (-r["identical"] / max(r["files"], 1), r["release"]))


def release_root(directory: Path, manifest: dict[str, str]) -> Path:
    """The dir a release's paths are relative to: `directory`, or its parent when it is itself one of the release's
    split dirs (e.g. `babylm_10M/`)."""
    split_dirs = {rel.split("/")[0] for rel in manifest}
    if directory.name in split_dirs and not any((directory / d).exists() for d in split_dirs):
        return directory.parent
    return directory


def verify_babylm_dir(directory: Path, manifest: dict[str, str] | None = None) -> list[dict]:
    """Check every file of a release manifest (default: 2023's) under `directory`.

    Returns one row per file: split dir, source, status in {'identical', 'modified', 'missing'}.
    A dir that is itself a split dir (e.g. `babylm_10M/`) is looked up one level up.

    Raises:
        BblError: if `directory` does not exist.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise BblError(f"{directory}: directory not found; pass the dir that holds babylm_10M/ and babylm_dev/")
    manifest = manifest or official_manifest()
    directory = release_root(directory, manifest)
    rows = []
    for rel, sha in manifest.items():
        path = directory / rel
        status = "missing" if not path.is_file() else ("identical" if git_blob_sha1(path) == sha else "modified")
        split_dir, file = rel.split("/", 1)
        rows.append({"split": split_dir, "source": file.rsplit(".", 1)[0], "path": str(path), "status": status})
    return rows


def verify_release(directory: Path, extra_manifests=()) -> dict:
    """`bbl data verify`: which release `directory` holds (by content), then its files against that release.

    Returns {releases: the ranking of `identify_release`, release: the best match (babylm-2023 when no file
    matches any), files: `verify_babylm_dir` rows, counts: {identical, modified, missing}, summary: one line,
    ok: no file of the release is present but modified}.

    Raises:
        BblError: `directory` does not exist or holds no file of any release (by content or path), or an extra
            manifest is missing, empty or malformed.
    """
    releases = release_manifests(extra_manifests)
    if not Path(directory).is_dir():
        raise BblError(f"{directory}: directory not found; pass the dir that holds the release's split dirs")
    ranking = identify_release(directory, releases)
    top = ranking[0]
    if not top["identical"] and not any((release_root(Path(directory), m) / rel).is_file()
                                        for m in releases.values() for rel in m):
        raise BblError(f"{directory}: holds no file of {', '.join(releases)} (by content or by path); pass the dir "
                       f"that holds the release's split dirs (babylm_10M/, babylm_dev/, ...), or --manifest FILE for "
                       f"another release")
    best = top["release"] if top["identical"] else "babylm-2023"
    rows = verify_babylm_dir(directory, releases[best])
    counts = {s: sum(r["status"] == s for r in rows) for s in ("identical", "modified", "missing")}
    summary = (f"release: {top['release']} ({top['identical']} of its {top['files']} files here, byte for byte)"
               if top["identical"] else f"release: none of {', '.join(releases)} (no file identical)")
    return {"releases": ranking, "release": best, "files": rows, "counts": counts, "summary": summary,
            "ok": counts["modified"] == 0}
