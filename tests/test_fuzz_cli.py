"""Bad input found by a machine: Hypothesis draws option values and `--set` overrides for every command (huge and
negative integers, NaN and infinities, Unicode and 300-character paths, paths under a file or in a place nobody can
write, empty and truncated metadata files) and checks the reliability contract on each: the command either accepts
the input (it reaches its compute, which a guard stops, or it finishes: a read-only command) or refuses it with exit
1 or 2, one `error:` line, no traceback, and nothing created or changed.

The commands run in-process through click's CliRunner on tiny fixtures; the budget is fixed (`EXAMPLES` per
command, derandomized, no deadline), so the slow tier runs the same examples every time.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from .helpers import run  # noqa: E402

pytestmark = pytest.mark.slow

EXAMPLES = 60
"""Examples drawn per command (each a CliRunner call: most are refused in milliseconds)."""


class ComputeStarted(BaseException):
    """Raised by the guard where a command would have started computing: its input was accepted. A BaseException,
    so no `except Exception` on the way turns it into an error line."""


# ---- the workspace: fixtures and hostile files, restored after any example that changed it ----------------------

def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 2])


def _build(root: Path, sources: dict[str, Path]) -> None:
    """The fixtures (copies) and the hostile places every example may be pointed at."""
    root.mkdir(parents=True)
    for name, src in sources.items():
        shutil.copytree(src, root / name)
    (root / "file.txt").write_text("a user's file\n")
    (root / "notes").mkdir()
    (root / "notes" / "a.txt").write_text("keep\n")
    (root / "space.yaml").write_text("training.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n")
    glue = root / "glue"
    glue.mkdir()
    rows = "".join(json.dumps({"sentence1": "a b .", "sentence2": "b a .", "label": i % 2, "idx": i}) + "\n"
                   for i in range(8))
    for split in ("train", "valid"):
        (glue / f"rte.{split}.jsonl").write_text(rows)
    for how in ("empty", "truncated"):
        p = shutil.copytree(sources["prepared"], root / f"prepared-{how}")
        _damage(p / "manifest.json", how)
        m = shutil.copytree(sources["teacher"], root / f"teacher-{how}-config")
        _damage(m / "config.json", how)
        w = shutil.copytree(sources["teacher"], root / f"teacher-{how}-weights")
        _damage(w / "model.safetensors", how)
        c = shutil.copytree(sources["cache"], root / f"cache-{how}.zarr")
        _damage(c / "zarr.json", how)


def _snapshot(root: Path) -> dict:
    """{relative path: (size, mtime_ns) or 'dir'} of everything under `root` (what "nothing changed" compares)."""
    out = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(base) / name
            st_ = p.lstat()
            out[str(p.relative_to(root))] = "dir" if p.is_dir() and not p.is_symlink() else (st_.st_size,
                                                                                             st_.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def workspace(tiny_teachers, prepared, sparse_caches, tiny_babylm, tmp_path_factory):
    """(root, rebuild): the fixtures and hostile files under `root`; `rebuild()` restores them."""
    base = tmp_path_factory.mktemp("fuzz")
    run_dir = shutil.copytree(tiny_teachers[0], base / "run")  # a finished run, as `bbl export` reads one
    (run_dir / "bbl_run.json").write_text('{"complete": true, "kind": "teacher", "global_step": 1, '
                                          '"ledger": {"words_seen": 1000}}')
    sources = {"prepared": prepared, "teacher": tiny_teachers[0], "teacher2": tiny_teachers[1],
               "cache": sparse_caches["topk"], "babylm": tiny_babylm[0].parent, "run": run_dir}
    root = base / "ws"

    def rebuild():
        shutil.rmtree(root, ignore_errors=True)
        _build(root, sources)
        return _snapshot(root)

    return root, rebuild


# ---- what is drawn ---------------------------------------------------------------------------------------------

HUGE = [0, -1, -(2**63), 2**31, 2**32, 2**63, 2**64, 10**23, -(10**23)]
INTS = st.one_of(st.sampled_from(HUGE), st.integers(min_value=-(2**70), max_value=2**70)).map(str)
FLOATS = st.one_of(st.sampled_from(["nan", "-nan", "inf", "-inf", "1e400", "-1e400", "0", "-0.0", "1e-400", "-1"]),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
PLACES = ["missing/x", "n" * 300, "file.txt/x", "/proc/bbl-fuzz/x", "/sys/bbl-fuzz", "", "file.txt", "notes",
          "ünï😀 ⚙/x", "prepared", "prepared-empty", "prepared-truncated", "teacher", "teacher-empty-config",
          "teacher-truncated-config", "teacher-empty-weights", "teacher-truncated-weights", "cache", "cache-empty.zarr",
          "cache-truncated.zarr", "cache/topk_ids", "glue", "space.yaml", "memory://bbl-fuzz/c.zarr", "bogus://x"]
"""Where a path option may point (relative to the workspace unless absolute or a URL)."""
SET_VALUES = st.one_of(INTS, FLOATS, TEXT, st.sampled_from(["[", "{a: 1}", "null", "~", "true", "[1, -2]", ".nan",
                                                           "'x' * 9", "1e400", "-.inf", "a: b: c"]))


def _place(root: Path, name: str) -> str:
    return name if name.startswith("/") or "://" in name or name == "" else str(root / name)


def _value(param, root: Path):
    """A strategy of hostile values for one click parameter, by its type."""
    import click

    kind = param.type
    if isinstance(kind, click.Path) or "Cache" in type(kind).__name__:
        return st.sampled_from(PLACES).map(lambda n: _place(root, n))
    if isinstance(kind, click.types.IntParamType):
        return INTS
    if isinstance(kind, click.types.FloatParamType):
        return FLOATS
    if isinstance(kind, click.Choice):
        return st.one_of(st.sampled_from(list(kind.choices)), TEXT)
    return st.one_of(TEXT, st.sampled_from(PLACES).map(lambda n: _place(root, n)))


def _base(command: str, root: Path) -> list[str]:
    """A valid invocation of `command` on the workspace (the fuzzed option is added or replaces its value)."""
    r = lambda name: str(root / name)  # noqa: E731
    return {
        "prepare": ["prepare", "--train-dir", r("babylm/babylm_10M"), "--dev-dir", r("babylm/babylm_dev"),
                    "--out", r("out")],
        "train-teacher": ["train-teacher", "llama-tiny", "--data", r("prepared"), "--out", r("out")],
        "train-student": ["train-student", "student-tiny", "--data", r("prepared"), "--out", r("out")],
        "distill": ["distill", "student-tiny", "--data", r("prepared"), "--cache", r("cache"), "--out", r("out")],
        "dump-logits": ["dump-logits", "--teacher", r("teacher"), "--data", r("prepared"), "--cache", r("out.zarr"),
                        "--seq-len", "32"],
        "eval": ["eval", r("teacher"), "--tasks", "perplexity", "--data", r("prepared"), "--out", r("out"),
                 "--seq-len", "32", "--dev-windows", "4"],
        "finetune": ["finetune", r("teacher"), "--tasks", "rte", "--task-data", r("glue"), "--out", r("out")],
        "cache info": ["cache", "info", "--cache", r("cache")],
        "cache verify": ["cache", "verify", "--cache", r("cache")],
        "cache repair": ["cache", "repair", "--cache", r("cache"), "--teacher", r("teacher"), "--teacher",
                         r("teacher2")],
        "study": ["study", "student-tiny", "--data", r("prepared"), "--workdir", r("out"), "--cache", r("cache"),
                  "--blimp-dir", r("notes"), "--supplement-dir", r("notes")],
        "sweep": ["sweep", "student-tiny", "--data", r("prepared"), "--space", r("space.yaml"), "--trials", "1",
                  "--workdir", r("out")],
        "pipeline": ["pipeline", "--preset", "tiny", "--corpus", r("babylm"), "--workdir", r("out")],
        "export": ["export", r("run"), "--out", r("out")],
        "data verify": ["data", "verify", r("notes")],
    }[command]


SET_SECTIONS = {"train-teacher": "training", "train-student": "training", "distill": "distill", "sweep": "training",
                "study": "training", "dump-logits": "dump", "eval": "eval", "finetune": "finetune"}
"""The `--set` section of each command that has one (training commands take model. and distill. keys too)."""


def _set_keys(command: str) -> list[str]:
    from bbl.cache.dump_config import DumpConfig
    from bbl.config import SECTIONS
    from bbl.evaluate.run import EvalConfig
    from bbl.finetune.recipe import FinetuneConfig

    section = SET_SECTIONS[command]
    if section in ("training", "distill"):
        return [f"{s}.{k}" for s, cls in SECTIONS.items() for k in cls.__dataclass_fields__]
    cls = {"dump": DumpConfig, "eval": EvalConfig, "finetune": FinetuneConfig}[section]
    return [f"{section}.{f.name}" for f in cls.__dataclass_fields__.values() if f.init]


def _command_object(command: str):
    from bbl.cli import main

    obj = main
    for word in command.split():
        obj = obj.commands[word]
    return obj


def _options(command: str) -> list:
    """The fuzzable parameters of a command: every option and argument but --help (and --set, drawn apart)."""
    import click

    return [p for p in _command_object(command).params
            if p.name not in ("help", "overrides") and not (isinstance(p, click.Option) and p.hidden)]


@st.composite
def invocations(draw, command: str, root: Path):
    """argv of `command`: its valid base with one parameter given a hostile value, or a hostile `--set`."""
    import click

    argv = _base(command, root)
    if command in SET_SECTIONS and draw(st.booleans()):
        key = draw(st.sampled_from(_set_keys(command)))
        return [*argv, "--set", f"{key}={draw(SET_VALUES)}"]
    param = draw(st.sampled_from(_options(command)))
    if isinstance(param, click.Argument):  # a positional operand: replace the base's
        value = draw(_value(param, root))
        words = len(command.split())
        return [*argv[:words], value, *argv[words + 1:]] if len(argv) > words else [*argv, value]
    flag = param.opts[0]
    if param.is_flag or param.count:
        return [*argv, flag]
    value = draw(_value(param, root))
    if flag in argv:
        i = argv.index(flag)
        return [*argv[:i + 1], value, *argv[i + 2:]]
    return [*argv, flag, value]


COMMANDS = ["prepare", "train-teacher", "train-student", "distill", "dump-logits", "eval", "finetune", "cache info",
            "cache verify", "cache repair", "study", "sweep", "pipeline", "export", "data verify"]
READ_ONLY_VERDICTS = {"cache verify": "bad:", "data verify": "modified"}
"""Commands whose exit 1 may be a verdict (lines on stdout) rather than one `error:` line."""


def _guarded(monkeypatch) -> None:
    """Stop every command where its compute starts: a forward pass, a Trainer's train(), a child run, an Optuna
    study, prepare's cleaning, export's first git call."""
    import torch
    import transformers

    import bbl.data.prepare
    import bbl.hub.export
    import bbl.orchestration.runner
    import bbl.study.sweep

    def stop(*_, **__):
        raise ComputeStarted

    monkeypatch.setattr(torch.nn.Module, "__call__", stop)
    monkeypatch.setattr(transformers.Trainer, "train", stop)
    monkeypatch.setattr(bbl.orchestration.runner, "run_bbl", stop)
    monkeypatch.setattr(bbl.study.sweep, "_open_study", stop)
    monkeypatch.setattr(bbl.data.prepare, "_clean", stop)
    monkeypatch.setattr(bbl.hub.export, "_git", stop)


@pytest.mark.parametrize("command", COMMANDS)
def test_hostile_input_is_accepted_or_refused_in_one_line_with_nothing_written(command, workspace):
    root, rebuild = workspace
    state = {"pristine": rebuild()}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(argv=invocations(command, root))
    def check(argv):
        result = None
        with pytest.MonkeyPatch.context() as m:
            _guarded(m)
            m.chdir(root)
            try:
                result = run(argv)
            except ComputeStarted:
                pass
        changed = _snapshot(root) != state["pristine"]
        if changed:  # restored before the next example, whatever this one did
            state["pristine"] = rebuild()
        if result is None or result.exit_code == 0:
            return  # accepted: the input was good enough to compute on (or a read-only command answered)
        shown = f"bbl {' '.join(map(str, argv))}\n{result.output}"
        assert isinstance(result.exception, SystemExit), shown + repr(result.exception)
        assert result.exit_code in (1, 2), shown
        assert "Traceback" not in result.output, shown
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        verdict = READ_ONLY_VERDICTS.get(command)
        if not (errors == [] and verdict and result.exit_code == 1 and verdict in result.output):
            assert len(errors) == 1, shown
        assert not changed, shown + "\nthe refused command created or changed files"

    check()
