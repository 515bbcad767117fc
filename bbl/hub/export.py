"""`bbl export`: a training run dir as a git repository in the Hugging Face Hub's layout, ready to push.

`main` holds the final model, and each `word_checkpoints/chck_{N}M` dir a branch of that name (the BabyLM 2025/2026
convention: intermediate checkpoints are revisions `chck_{N}M` of one repo). Each revision is a plain HF dir
(config, weights, tokenizer, the ledger) with its model card (`bbl.hub.card`) and the Hub's `.gitattributes`; its
tokenizer config is the one the BabyLM pipeline's transformers 4.51.3 reads as bbl's transformers 5 does, also for a
run written by an older bbl (`bbl.data.tokenizer.write_portable_config`; the source run is not touched). The
commits form one line in training order (chck_1M, chck_2M, ..., main), so `git log main` is the run's progress and
each weight file is stored once per revision. Git runs as a subprocess; nothing touches the network: the commands
to publish are returned (`publish_commands`) for the user to run.

    bbl export runs/student/distilled --out exports/distilled --repo-id ORG/NAME [--results results/]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bbl import __version__
from bbl.data.tokenizer import write_portable_config
from bbl.errors import BblError
from bbl.hub.card import Revision, render_card
from bbl.io import atomic_write_json, load_json
from bbl.models.build import check_model_dir
from bbl.outputs import LOCK_FILE, claim_output
from bbl.train.ledger import CHECKPOINT_DIR, CHECKPOINT_FILE
from bbl.train.recipe import RUN_FILE

MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model-*.safetensors",
               "model.safetensors.index.json", "pytorch_model*.bin", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", RUN_FILE, CHECKPOINT_FILE)
"""The files of a model dir that go into a revision (training state, optimizer, pickles and logs stay behind)."""
MARKER = "bbl_export.json"
"""Inside `.git/` (never pushed): the source run and each revision's commit; its presence marks a bbl export."""
GITATTRIBUTES = """\
*.bin filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
tokenizer.json filter=lfs diff=lfs merge=lfs -text
"""
"""The LFS patterns of a new Hub model repo (huggingface_hub's default .gitattributes, for the file kinds here)."""


@dataclass(frozen=True)
class ExportResult:
    """What `export_run` wrote."""

    out: Path
    revisions: list[Revision]
    commits: dict[str, str]
    """{revision: commit sha}."""
    lfs: bool
    """Whether git-lfs stored the weights as LFS objects (needed to `git push` them to the Hub)."""


def _git(repo: Path, *args: str, env: dict | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BblError(f"git {' '.join(args[:2])} in {repo} failed ({last}); check git works there")
    return done.stdout.strip()


def _git_env(repo: Path) -> dict:
    """The environment of every git call: no prompts, and an identity of its own where the user has none."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    configured = all(subprocess.run(["git", "config", "--get", key], cwd=repo, capture_output=True).returncode == 0
                     for key in ("user.name", "user.email"))
    if not configured:
        env.update(GIT_AUTHOR_NAME="bbl export", GIT_AUTHOR_EMAIL="bbl@localhost",
                   GIT_COMMITTER_NAME="bbl export", GIT_COMMITTER_EMAIL="bbl@localhost")
    return env


def find_revisions(run_dir: Path) -> list[tuple[Revision, Path]]:
    """(revision, source dir) of every word checkpoint, in order of words seen, then `main` (the run dir).

    Raises:
        BblError: the run dir is not a finished bbl training run, or a checkpoint dir is not a model dir.
    """
    run_dir = Path(run_dir)
    fix = f"train {run_dir} to the end with bbl (its {RUN_FILE} is written last)"
    run = load_json(run_dir / RUN_FILE, fix=fix)
    if not run:
        raise BblError(f"{run_dir}: no {RUN_FILE}; pass the output dir of bbl train / bbl distill")
    if not run.get("complete"):
        raise BblError(f"{run_dir}: the run did not finish ({RUN_FILE} says complete: false); resume it first")
    check_model_dir(run_dir)
    checkpoints = []
    for d in sorted((run_dir / CHECKPOINT_DIR).glob("chck_*")):
        if d.name.endswith(".tmp") or not d.is_dir():
            continue
        check_model_dir(d)
        info = load_json(d / CHECKPOINT_FILE, fix=f"delete {d} (a checkpoint without its {CHECKPOINT_FILE})") or {}
        checkpoints.append((Revision(d.name, info.get("words_seen"), info.get("step")), d))
    checkpoints.sort(key=lambda rd: (rd[0].words_seen is None, rd[0].words_seen or 0, rd[0].name))
    ledger = run.get("ledger") or {}
    return checkpoints + [(Revision("main", ledger.get("words_seen"), run.get("global_step")), run_dir)]


def find_results(results_dirs, model_dir: Path) -> dict | None:
    """The `bbl eval` record (an entry of `results.json`) of `model_dir` in any of `results_dirs` (the last found
    wins), matched by the model's resolved path; None when none scored it alone."""
    found = None
    target = str(Path(model_dir).resolve())
    for d in results_dirs:
        file = Path(d) / "results.json"
        if not file.is_file():
            raise BblError(f"--results {d}: no results.json; pass the --out dir of a finished bbl eval")
        try:
            records = json.loads(file.read_text())
        except ValueError:
            raise BblError(f"{file}: not valid JSON; re-run bbl eval into {d}") from None
        for r in records if isinstance(records, list) else []:
            if r.get("paths") == [target]:
                found = r
    return found


def export_run(run_dir: Path, out: Path, *, results_dirs=(), repo_id: str | None = None, license: str | None = None,
               overwrite: bool = False, log=print) -> ExportResult:
    """Write the git repo of `run_dir` into `out` (see the module docstring).

    Args:
        results_dirs: `bbl eval --out` dirs; each revision whose model dir was scored gets its results in its card.
        repo_id: the Hub repo (ORG/NAME) named in the cards and the printed commands.
        license: the cards' `license` metadata (None: left out).
        overwrite: replace an earlier `bbl export` in `out` (only a dir bbl exported into).
    Raises:
        BblError: a run that is not finished, an `out` that exists and is not empty (unless an earlier export and
            `overwrite`), git missing or failing.
    """
    run_dir, out = Path(run_dir), Path(out)
    if shutil.which("git") is None:
        raise BblError("git not found; install git (bbl export writes a git repository)")
    revisions = find_revisions(run_dir)
    revisions = [(Revision(r.name, r.words_seen, r.step, find_results(results_dirs, d)), d) for r, d in revisions]
    run = load_json(run_dir / RUN_FILE) or {}
    name = run_dir.resolve().name
    lfs = shutil.which("git-lfs") is not None
    with claim_output(out, "export", overwrite=overwrite, log=log):
        env = _git_env(out)

        def git(*args: str) -> str:
            return _git(out, *args, env=env)

        git("init", "-q", "-b", "main")
        atomic_write_json(out / ".git" / MARKER, {"bbl_version": __version__, "source": str(run_dir.resolve()),
                                                  "complete": False})
        with open(out / ".git" / "info" / "exclude", "a") as f:
            f.write(f"\n{LOCK_FILE}\n")  # the writer's lock sits in the work tree while we commit
        if lfs:
            git("lfs", "install", "--local")
        commits = {}
        for revision, source in revisions:
            _fill_tree(out, source)
            (out / ".gitattributes").write_text(GITATTRIBUTES)
            (out / "README.md").write_text(render_card(run, name=name, revisions=[r for r, _ in revisions],
                                                       repo_id=repo_id, license=license, revision=revision.name))
            git("add", "-A")
            words = "unknown" if revision.words_seen is None else f"{revision.words_seen:,}"
            git("commit", "-q", "-m", f"{revision.name}: {name} after {words} words (step {revision.step})"
                 + (" (the final model)" if revision.name == "main" else ""))
            commits[revision.name] = git("rev-parse", "HEAD")
            if revision.name != "main":
                git("branch", revision.name)
            log(f"{revision.name}: {source} ({words} words) -> commit {commits[revision.name][:10]}")
        atomic_write_json(out / ".git" / MARKER, {"bbl_version": __version__, "source": str(run_dir.resolve()),
                                                  "repo_id": repo_id, "commits": commits, "complete": True})
    return ExportResult(out, [r for r, _ in revisions], commits, lfs)


def _fill_tree(out: Path, source: Path) -> None:
    """Make the work tree hold exactly `source`'s model files (all but .git and the lock removed first), its
    tokenizer config rewritten by `bbl.data.tokenizer.write_portable_config` (token ids unchanged)."""
    for p in out.iterdir():
        if p.name in (".git", LOCK_FILE):
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for pattern in MODEL_FILES:
        for f in sorted(source.glob(pattern)):
            if f.is_file():
                shutil.copy2(f, out / f.name)
    write_portable_config(out)  # a run of an older bbl gets the config the BabyLM pipeline's transformers reads


def fix_tokenizer_configs(model_dir: Path) -> dict[Path, bool]:
    """`bbl fix-tokenizer`: rewrite the tokenizer config of `model_dir` and of the model dirs a run keeps inside it
    (`word_checkpoints/chck_*`, the Trainer's `checkpoints/checkpoint-*`) as `write_portable_config` does, for dirs
    written before it existed; `tokenizer.json`, and so every token id, is not touched.

    Returns:
        {dir: whether its tokenizer_config.json changed}, `model_dir` first.
    Raises:
        BblError: neither `model_dir` nor any of those dirs holds a tokenizer.json.
    """
    model_dir = Path(model_dir)
    inner = [d for pattern in (f"{CHECKPOINT_DIR}/chck_*", "checkpoints/checkpoint-*")
             for d in sorted(model_dir.glob(pattern)) if not d.name.endswith(".tmp")]
    dirs = [d for d in (model_dir, *inner) if (d / "tokenizer.json").is_file()]
    if not dirs:
        raise BblError(f"{model_dir}: no tokenizer.json here or in its checkpoints; pass a model dir bbl wrote")
    return {d: write_portable_config(d) for d in dirs}


def publish_commands(result: ExportResult, repo_id: str | None = None) -> list[str]:
    """The shell lines that publish the export: with git (needs git-lfs for the weights) or with the `hf` CLI of
    huggingface_hub (`huggingface-cli upload` with the same arguments before huggingface_hub 1.0), which creates
    the repo, creates each `chck_*` branch from `main` and mirrors the folder into it (`--delete "*"`)."""
    repo = repo_id or "ORG/NAME"
    branches = [r.name for r in result.revisions]
    checkpoints = [b for b in branches if b != "main"]
    lines = [f"cd {result.out}", "", "# with git (git-lfs stores the weights; the Hub refuses plain files over 10 MB):"]
    if not result.lfs:
        lines.append("#   git-lfs was not installed at export: the weights are plain git blobs, so use the hf "
                     "commands below (or install git-lfs and export again)")
    lines += [f"hf repos create {repo} --exist-ok   # the Hub repo must exist before a git push",
              f"git remote add origin https://huggingface.co/{repo}", f"git push origin {' '.join(branches)}", "",
              "# or with huggingface_hub's CLI (huggingface-cli upload takes the same arguments before 1.0):",
              f"hf upload {repo} . . --revision main --delete '*' --commit-message 'main: the final model'"]
    for b in checkpoints:
        lines.append(f"git checkout -q {b} && hf upload {repo} . . --revision {b} --delete '*' "
                     f"--commit-message '{b}'")
    if checkpoints:
        lines.append("git checkout -q main")
    return lines
