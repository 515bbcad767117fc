"""`bbl data verify`: compare a BabyLM dir with the official 2023 release, file by file (git blob SHA-1).

The 30 hashes (10 sources x train/dev/test) ship in `babylm_manifest.txt`; they are facts about the release.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bbl.data import git_blob_sha1
from bbl.errors import BblError


def official_manifest() -> dict[str, str]:
    """{relative path, e.g. 'babylm_10M/cbt.train': git blob SHA-1} of the official BabyLM 2023 release."""
    text = resources.files("bbl").joinpath("babylm_manifest.txt").read_text()
    return {path: sha for sha, path in (line.split() for line in text.splitlines() if line.strip())}


def verify_babylm_dir(directory: Path) -> list[dict]:
    """Check every official file under `directory` (which holds babylm_10M/, babylm_dev/, babylm_test/).

    Returns one row per file: split dir, source, status in {'identical', 'modified', 'missing'}.
    A dir that is itself a split dir (e.g. `babylm_10M/`) is looked up one level up.

    Raises:
        BblError: if `directory` does not exist.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise BblError(f"{directory}: directory not found; pass the dir that holds babylm_10M/ and babylm_dev/")
    if directory.name.startswith("babylm_") and not (directory / "babylm_10M").exists():
        directory = directory.parent
    rows = []
    for rel, sha in official_manifest().items():
        path = directory / rel
        status = "missing" if not path.is_file() else ("identical" if git_blob_sha1(path) == sha else "modified")
        split_dir, file = rel.split("/")
        rows.append({"split": split_dir, "source": file.rsplit(".", 1)[0], "path": str(path), "status": status})
    return rows
