"""The bytes of a cache of every kind, pinned: a dump from fixed inputs (the tiny corpus, seeded random teachers,
a byte-level BPE teacher without prefix space for the cross-tokenizer kind, `helpers.foreign_teacher`) stores exactly the files bbl stored
before the cache kinds moved to one registry (commit 218cf05; tests/data/cache_digests.json, made by running this
file as a script with that commit on PYTHONPATH). So a cache written before the change reads, verifies and repairs as
one written now: they are the same bytes. The cross-tokenizer cache's `alignment` chunks and its prefix-space arrays
were regenerated when issue 41 changed the line-start alignment (`alignment_rule: token_end_prefix_space`).

A failure means a change altered what a dump stores (a codec, a dtype, the order of a reduction): if that is
intended, say so in the commit and regenerate the file (`python tests/test_cache_digests.py OUT_DIR`).

Format extensions: a later dump may hold new arrays beside the recorded ones (each recorded file still
byte-identical), only those listed in `NEW_ARRAYS` for their kind, each with the reason. Caches written before
hold none of them and read as before (their kind's `arrays(attrs)` and `static_arrays(attrs)` ask an attribute).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

DIGESTS = Path(__file__).parent / "data" / "cache_digests.json"
COMMON = {"seq_len": 32, "chunk_windows": 8, "max_windows": 24, "batch_size": 4, "temperature": 2.0}
KINDS = {
    "topk": {"top_k": 16},
    "sampled": {"targets": "sampled", "num_samples": 12},
    "hybrid": {"targets": "hybrid", "top_k": 8, "num_samples": 6},
    "hybrid-stored": {"targets": "hybrid", "top_k": 4, "num_samples": 4, "logprob_step": 2 ** -4, "delta_ids": True,
                      "sample_counts": True, "kd_fraction": 0.5},
    "cross_tokenizer": {"targets": "cross_tokenizer", "top_k": 8},
}


NEW_ARRAYS = {
    "cross_tokenizer": {
        "teacher_token_logprob": "ALM (issue 41): the teacher's T = 1 log-prob of each stored token; dumps that "
                                 "record alm_targets",
        "teacher_boundary_logprob": "ALM (issue 41): the teacher's T = 1 boundary log-mass after each stored token",
        "student_boundary": "ALM (issue 41): the student's boundary ids (static), for its own debiasing mass",
    },
}
"""{kind: {array: why}}: the arrays a dump of the kind may store beyond the recorded files."""


def dump_all(prepared: Path, teachers: list[Path], foreign: Path, root: Path) -> dict[str, dict[str, str]]:
    """{kind: {file: md5}} of a dump of every kind into `root` (the group's own zarr.json, which holds timings and
    paths, left out)."""
    from bbl.cache.dump import dump_logits

    try:  # the layout after the registry: one dump driver for every kind
        from bbl.cache.compute.cross_tokenizer import CrossTokenizerConfig
        from bbl.cache.dump_config import DumpConfig

        dump_cross = dump_logits
    except ImportError:  # the layout before it (the commit the digests were made with)
        from bbl.cache.kinds.cross_tokenizer_dump import dump_cross_tokenizer as dump_cross

        from bbl.cache.format import DumpConfig
        from bbl.cache.kinds.cross_tokenizer import CrossTokenizerConfig
    out = {}
    for name, settings in KINDS.items():
        path = root / f"{name}.zarr"
        if settings.get("targets") == "cross_tokenizer":
            config = CrossTokenizerConfig(**{k: v for k, v in {**COMMON, **settings}.items() if k != "targets"})
            dump_cross([foreign], prepared, path, config, progress=False, log=lambda *_: None)
        else:
            dump_logits(teachers, prepared, path, DumpConfig(**COMMON, **settings), progress=False,
                        log=lambda *_: None)
        out[name] = {str(f.relative_to(path)): hashlib.md5(f.read_bytes()).hexdigest()
                     for f in sorted(path.rglob("*")) if f.is_file() and f.relative_to(path) != Path("zarr.json")}
    return out


@pytest.mark.slow
def test_every_kind_stores_the_bytes_it_stored_before(prepared, tiny_teachers, tmp_path):
    from .helpers import foreign_teacher

    want = json.loads(DIGESTS.read_text())
    got = dump_all(prepared, tiny_teachers, foreign_teacher(prepared, tmp_path / "foreign"), tmp_path)
    assert set(got) == set(want)
    for kind in want:
        new = {f for f in set(got[kind]) - set(want[kind]) if f.split("/")[0] in NEW_ARRAYS.get(kind, {})}
        files = set(want[kind]) | (set(got[kind]) - new)
        differ = sorted(f for f in files if want[kind].get(f) != got[kind].get(f))
        assert not differ, f"{kind}: {len(differ)} stored file(s) differ from before, e.g. {differ[:4]}"
        assert {f.split("/")[0] for f in new} == set(NEW_ARRAYS.get(kind, {})), f"{kind}: a listed new array is absent"


if __name__ == "__main__":  # python tests/test_cache_digests.py OUT_DIR: write the digests of the code on the path
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from bbl.data.prepare import prepare
    from tests.conftest import TINY_VOCAB, save_random_model, write_tiny_babylm
    from tests.helpers import foreign_teacher

    root = Path(sys.argv[1])
    prepare(*write_tiny_babylm(root / "babylm"), root / "prepared", vocab_size=TINY_VOCAB, progress=False,
            log=lambda *_: None)
    teachers = [save_random_model("llama-tiny", root / "prepared", root / "llama", seed=1),
                save_random_model("gpt2-tiny", root / "prepared", root / "gpt2", seed=2)]
    digests = dump_all(root / "prepared", teachers, foreign_teacher(root / "prepared", root / "foreign"), root)
    DIGESTS.parent.mkdir(exist_ok=True)
    DIGESTS.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    print(f"wrote {DIGESTS}: {sum(map(len, digests.values()))} files of {len(digests)} caches")
