"""The study's arms: how each one trains the student (baseline, cached, online, or `--arm NAME:OPTIONS`), and the
`bbl` command line of one (arm, seed) run."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from bbl.cache.store import cache_location
from bbl.config import parse_cache_spec
from bbl.errors import UsageError

ARM_HELP = ("NAME:OPTIONS, OPTIONS among --set SECTION.KEY=VALUE, --cache PATH[:KEY=VALUE,...] (repeat it to "
            "distil from several caches, as `bbl distill`), --online, --baseline; e.g. --arm 'renorm:--set "
            "distill.kd_variant=topk_renorm'")


@dataclass
class Arm:
    """One way of training the student: `mode` baseline | cached | online, plus config overrides.

    Attributes:
        caches: a cached arm's caches, each a location (a `Path`, or an fsspec URL) or a `--cache` spec with its own
            settings (`bbl.config.parse_cache_spec`), passed to `bbl distill --cache` as they are.
    """

    name: str
    mode: str
    caches: list = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)

    @property
    def cache(self):
        """The arm's first cache (its only one, but for an arm that distils from several); None if it has none."""
        return self.caches[0] if self.caches else None


def parse_arm(spec: str, *, default_cache: Path | None) -> Arm:
    """An `--arm NAME:OPTIONS` spec as an `Arm` (cached from the study's cache unless it names caches of its own).

    Raises:
        BblError: malformed spec, unknown option, a malformed `--cache` spec, or a cached arm with no cache.
    """
    name, sep, rest = spec.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UsageError(f"--arm {spec!r}: use {ARM_HELP}")
    arm = Arm(name, "cached", [default_cache] if default_cache is not None else [])
    own = []
    tokens = shlex.split(rest)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in ("--set", "--cache") and i + 1 < len(tokens):
            if token == "--set":
                arm.overrides.append(tokens[i + 1])
            else:
                location, settings = parse_cache_spec(tokens[i + 1])
                own.append(tokens[i + 1] if settings else cache_location(location))
            i += 2
        elif token in ("--online", "--baseline"):
            arm.mode = token[2:]
            i += 1
        else:
            raise UsageError(f"--arm {spec!r}: unexpected {token!r}; use {ARM_HELP}")
    if own:
        arm.caches = own
    if arm.mode == "cached" and not arm.caches:
        raise UsageError(f"--arm {spec!r}: a cached arm needs a cache; give the study --cache or the arm --cache PATH")
    return arm


def run_argv(arm: Arm, config: str, data_dir: Path, out: Path, seed: int, overrides: list[str],
             teachers: list[Path]) -> list[str]:
    """The `bbl` argument list of one (arm, seed) run."""
    sets = [a for o in [*overrides, *arm.overrides, f"training.seed={seed}"] for a in ("--set", o)]
    common = [config, "--data", str(data_dir), "--out", str(out), "--resume", *sets]
    if arm.mode == "baseline":
        return ["train-student", *common]
    if arm.mode == "online":
        return ["distill", *common, *[a for t in teachers for a in ("--teacher", str(t))]]
    return ["distill", *common, *[a for c in arm.caches for a in ("--cache", str(c))]]
