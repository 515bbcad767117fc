"""Shared fixtures: a tiny hand-made BabyLM dir, a prepared dir from it, and the real data path."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REAL_DATA = Path(os.environ.get("BBL_DATA") or os.environ.get("BBL_REAL_DATA")
                 or Path(__file__).resolve().parents[1].parent / "shared" / "data")
"""The real BabyLM data and evaluation sets: `BBL_DATA` (or `BBL_REAL_DATA`), else ../shared/data beside the repo
(a checkout elsewhere, e.g. a git worktree, names it)."""
EVAL_PIPELINE = Path(os.environ.get("BBL_EVAL_PIPELINE")
                     or Path(__file__).resolve().parents[1].parent / "shared" / "vendor" / "evaluation-pipeline-2025")
"""The BabyLM 2025 evaluation pipeline's own code (not on PyPI): `BBL_EVAL_PIPELINE`, else the copy vendored at
../shared/vendor/evaluation-pipeline-2025 beside the repo (Apache-2.0, unchanged; its SOURCE.md names the commit)."""


def eval_pipeline_or_skip():
    """The pipeline's checkout on sys.path (its modules import as `evaluation_pipeline.*`), or skip the test."""
    import sys

    if not (EVAL_PIPELINE / "evaluation_pipeline" / "collate_preds.py").is_file():
        pytest.skip(f"the BabyLM evaluation pipeline's code not found at {EVAL_PIPELINE} (set BBL_EVAL_PIPELINE)")
    pytest.importorskip("pandas")
    pytest.importorskip("statsmodels")
    pytest.importorskip("scipy")
    if str(EVAL_PIPELINE) not in sys.path:
        sys.path.insert(0, str(EVAL_PIPELINE))
    return EVAL_PIPELINE


@pytest.fixture(scope="session")
def pipeline_python() -> Path:
    """The python of the BabyLM pipeline's own environment: a venv of its requirements.txt pins (transformers
    4.51.3, ...), built once under the cache dir by benchmarks/pipeline_env.py (`make pipeline-env`; the first call
    installs, about 1.5 min, later ones find it); `BBL_PIPELINE_PYTHON` names an existing one instead. Fails, not
    skips, when it cannot be built: CI reaches the package registries."""
    import subprocess
    import sys

    if os.environ.get("BBL_PIPELINE_PYTHON"):
        return Path(os.environ["BBL_PIPELINE_PYTHON"])
    if not (EVAL_PIPELINE / "requirements.txt").is_file():
        pytest.skip(f"the BabyLM evaluation pipeline's code not found at {EVAL_PIPELINE} (set BBL_EVAL_PIPELINE)")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "pipeline_env.py"), "--pipeline",
                           str(EVAL_PIPELINE)], capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"the pipeline env could not be built: {done.stderr[-2000:]}")
    return Path(done.stdout.splitlines()[-1])
TINY_VOCAB = 320

WORDS = ("the cat dog bird saw ran sat on a mat big small red blue who what is was it he she they we you "
         "go went come came happy sad tree house mother father baby ball play plays played").split()


def write_tiny_babylm(root: Path, *, lines: int = 400, seed: int = 0) -> tuple[Path, Path]:
    """Two sources (aochildes, switchboard) per split of seeded pseudo-sentences; returns (train_dir, dev_dir)."""
    rng = random.Random(seed)
    dirs = []
    for split, suffix in (("babylm_10M", "train"), ("babylm_dev", "dev")):
        d = root / split
        d.mkdir(parents=True)
        for source in ("aochildes", "switchboard"):
            text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + " ."
                             for _ in range(lines))
            (d / f"{source}.{suffix}").write_text(text + "\n")
        dirs.append(d)
    return dirs[0], dirs[1]


def real_data_or_skip() -> Path:
    if not (REAL_DATA / "babylm_10M").is_dir():
        pytest.skip(f"real BabyLM data not found at {REAL_DATA} (the project's ../shared/data)")
    return REAL_DATA


@pytest.fixture(scope="session")
def tiny_babylm(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny_babylm(tmp_path_factory.mktemp("babylm"))


@pytest.fixture(scope="session")
def prepared(tiny_babylm, tmp_path_factory) -> Path:
    from bbl.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(*tiny_babylm, out, vocab_size=TINY_VOCAB, progress=False, log=lambda *_: None)
    return out


def save_random_model(preset: str, prepared: Path, out: Path, *, seed: int = 0) -> Path:
    """A randomly initialised model of `preset`, saved with the prepared tokenizer as bbl saves a model's (an
    untrained teacher)."""
    from transformers import AutoTokenizer

    from bbl.config import load_config
    from bbl.data.prepared import PreparedData
    from bbl.data.tokenizer import save_hf_tokenizer
    from bbl.models.build import build_model

    data = PreparedData(prepared)
    model = build_model(load_config(preset).model, data.vocab_size, seed=seed)
    model.save_pretrained(out)
    save_hf_tokenizer(AutoTokenizer.from_pretrained(data.tokenizer_dir), out)
    return out


@pytest.fixture(scope="session")
def tiny_teachers(prepared, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("teachers")
    return [save_random_model("llama-tiny", prepared, root / "llama", seed=1),
            save_random_model("gpt2-tiny", prepared, root / "gpt2", seed=2)]


@pytest.fixture(scope="session")
def trained_cache(prepared, tmp_path_factory):
    """Two tiny teachers trained for a few epochs on the tiny data, and their top-16 cache at T = 2."""
    from bbl.cache.dump import dump_logits
    from bbl.cache.dump_config import DumpConfig
    from bbl.config import load_config
    from bbl.train.recipe import train_lm

    root = tmp_path_factory.mktemp("trained")
    teachers = [train_lm(load_config(p, ["training.epochs=3", "training.max_train_windows=null"]), prepared,
                         root / p, log=lambda *_: None) for p in ("llama-tiny", "gpt2-tiny")]
    cache = root / "ensemble.zarr"
    dump_logits(teachers, prepared, cache, DumpConfig(top_k=16, temperature=2.0, seq_len=32, chunk_windows=8), progress=False, log=lambda *_: None)
    return teachers, cache


@pytest.fixture(scope="session")
def sparse_caches(tiny_teachers, prepared, tmp_path_factory) -> dict[str, Path]:
    """A top-k, a sampled (12 draws) and a hybrid (top-8 + 6 draws) cache of the tiny teachers (`helpers.dump`),
    dumped once for every module that reads them; tests copy a cache before changing it."""
    from .helpers import dump

    root = tmp_path_factory.mktemp("sparse")
    caches = {"topk": root / "topk.zarr", "sampled": root / "sampled.zarr", "hybrid": root / "hybrid.zarr"}
    dump(tiny_teachers, prepared, caches["topk"])
    dump(tiny_teachers, prepared, caches["sampled"], targets="sampled", num_samples=12)
    dump(tiny_teachers, prepared, caches["hybrid"], targets="hybrid", num_samples=6)
    return caches
