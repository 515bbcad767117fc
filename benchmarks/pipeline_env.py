"""The BabyLM 2025 evaluation pipeline's own Python environment (issue 44), for parity checks in CI.

A venv holding what the pipeline's zero-shot and reading code imports, at the versions its requirements.txt pins
(transformers 4.51.3, tokenizers 0.21.1, huggingface-hub 0.31.0, numpy, pandas, scipy, statsmodels, datasets, ...),
every other package the install pulls in held to that file's pins too (`pip install -c`). torch is the one
exception: the pipeline pins 2.7.0, and an unpinned torch pulls a multi-GB CUDA build, so the venv gets the torch
release bbl runs on (`torch==2.13.0+cpu` on a CPU machine, from pip's cache or find-links): the comparison then
differs from bbl's own environment in the libraries that read model dirs and tokenize, not in the kernels.

The venv lives under a cache dir, named by a hash of everything that decides its contents, and is made once:
`bbl_pipeline_env.json` inside it is written last (with the install time), so a run that finds it reuses it in
a second and a run killed halfway starts that venv over; a lock keeps two runs from building it at once. It is
installed with the venv's own pip. Prints the venv's python as the last line of stdout.

    python benchmarks/pipeline_env.py [--pipeline PATH] [--cache DIR]
    make pipeline-env        # the same; .ci/run calls it before the slow tier

Cache dir: --cache, else $BBL_CACHE_DIR, else $XDG_CACHE_HOME/bbl, else ~/.cache/bbl.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = Path(os.environ.get("BBL_EVAL_PIPELINE") or ROOT.parent / "shared" / "vendor" / "evaluation-pipeline-2025")
PACKAGES = ("transformers", "tokenizers", "huggingface-hub", "safetensors", "numpy", "pandas", "scipy", "statsmodels",
            "datasets", "aiohttp", "tqdm", "regex", "PyYAML", "requests", "filelock", "packaging")
"""What the pipeline's sentence_zero_shot and reading code import, directly or through transformers (the pins
come from its requirements.txt)."""
MARKER = "bbl_pipeline_env.json"


def constraints(requirements: str) -> str:
    """The pipeline's requirements.txt as pip constraints, its torch pin left out (the venv takes bbl's torch)."""
    keep = [line for line in requirements.splitlines()
            if line.strip() and not line.lower().replace(" ", "").startswith("torch==")]
    return "\n".join(keep) + "\n"


def env_dir(cache: Path, requirements: str, torch_version: str) -> Path:
    """The venv's dir: one per (pins, packages, torch, python) so a changed pin makes a new venv."""
    key = json.dumps([constraints(requirements), PACKAGES, torch_version, sys.version_info[:2]])
    return cache / f"pipeline-env-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure(pipeline: Path, cache: Path, log=print) -> Path:
    """The pipeline env's python, building the venv first when it is not complete (see the module docstring)."""
    req_file = pipeline / "requirements.txt"
    if not req_file.is_file():
        sys.exit(f"error: {req_file} not found; pass --pipeline (a checkout of babylm/evaluation-pipeline-2025)")
    requirements = req_file.read_text()
    torch_version = version("torch")
    venv = env_dir(cache, requirements, torch_version)
    if (venv / MARKER).is_file():
        return python_of(venv)
    cache.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits here, then finds the marker
        if (venv / MARKER).is_file():
            return python_of(venv)
        shutil.rmtree(venv, ignore_errors=True)  # a build killed halfway
        log(f"building the pipeline env {venv} (transformers and the rest as {req_file} pins; torch {torch_version})")
        start = time.time()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        (venv / "constraints.txt").write_text(constraints(requirements))
        done = subprocess.run([str(python_of(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               "-c", str(venv / "constraints.txt"), *PACKAGES, f"torch=={torch_version}"],
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"error: pip install into {venv} failed:\n{done.stderr[-3000:]}")
        seconds = round(time.time() - start, 1)
        probe = "import json, torch, transformers, tokenizers; print(json.dumps({m.__name__: m.__version__ " \
                "for m in (torch, transformers, tokenizers)}))"
        versions = json.loads(subprocess.run([str(python_of(venv)), "-c", probe], check=True, capture_output=True,
                                             text=True).stdout)
        (venv / MARKER).write_text(json.dumps({"requirements": str(req_file), "packages": list(PACKAGES),
                                               "versions": versions, "install_seconds": seconds,
                                               "built": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
        log(f"built in {seconds} s: {versions}")
    return python_of(venv)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", type=Path, default=PIPELINE, help="checkout of babylm/evaluation-pipeline-2025")
    ap.add_argument("--cache", type=Path, default=None, help="where the venv goes (see the module docstring)")
    args = ap.parse_args()
    cache = args.cache or Path(os.environ.get("BBL_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME")
                                                                       or Path.home() / ".cache") / "bbl")
    python = ensure(args.pipeline, cache, log=lambda m: print(m, file=sys.stderr))
    info = json.loads((python.parents[1] / MARKER).read_text())
    print(f"pipeline env: {info['versions']}, installed in {info['install_seconds']} s on {info['built']}",
          file=sys.stderr)
    print(python)


if __name__ == "__main__":
    main()
