"""The BabyLM corpus layouts of 2023-2026 (issue 13): 2024 text dirs, local Hugging Face dataset copies, and
`bbl data verify` naming the release a dir holds."""

import json
import random

import pytest
from click.testing import CliRunner

from bbl.cli import main
from bbl.data.prepare import prepare
from bbl.data.prepared import PreparedData
from bbl.io import git_blob_sha1

from .conftest import WORDS

SOURCES_2024 = ("bnc_spoken", "childes", "gutenberg", "open_subtitles", "simple_wiki", "switchboard")


def sentences(rng, n):
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + " ." for _ in range(n)]


def write_2024(root, extra=()):
    """train_10M/ and dev/ with the 2024 release's six sources (and any `extra` ones)."""
    rng = random.Random(0)
    for split, suffix in (("train_10M", "train"), ("dev", "dev")):
        (root / split).mkdir(parents=True)
        for source in (*SOURCES_2024, *extra):
            (root / split / f"{source}.{suffix}").write_text("\n".join(sentences(rng, 120)) + "\n")
    return root / "train_10M", root / "dev"


def logged(**kw):
    lines = []
    manifest = prepare(**kw, vocab_size=300, progress=False, log=lines.append)
    return manifest, lines


def test_the_2024_layout_prepares_with_renamed_sources_mapped_to_their_cleaners(tmp_path):
    train, dev = write_2024(tmp_path / "babylm_2024", extra=("mystery",))
    manifest, lines = logged(train_dir=train, dev_dir=dev, out=tmp_path / "prep")
    cleaners = {r["source"]: r["cleaner"] for r in manifest["files"] if r["split"] == "train"}
    assert cleaners["childes"] == "aochildes" and cleaners["simple_wiki"] == "simple_wikipedia"
    assert cleaners["bnc_spoken"] == "bnc_spoken" and cleaners["mystery"] == "generic"
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 2 and all("'mystery'" in w for w in warnings)  # named once per split, nothing else
    data = PreparedData(tmp_path / "prep")
    assert len(data.stream("train")) > 0 and int(data.word_starts("train").sum()) == \
        sum(r["words_clean"] for r in manifest["files"] if r["split"] == "train")


def test_a_local_hugging_face_dataset_copy_prepares_by_source_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rng = random.Random(1)
    rows = [{"text": s, "source": src} for src in ("childes", "gutenberg") for s in sentences(rng, 150)]
    rng.shuffle(rows)
    (tmp_path / "train").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train" / "train-00000-of-00001.parquet")
    dev = tmp_path / "dev.jsonl"  # no source column: one source named after the file
    dev.write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences(rng, 200)))
    manifest, lines = logged(train_dir=tmp_path / "train", dev_dir=dev, out=tmp_path / "prep")
    train = {r["source"]: r for r in manifest["files"] if r["split"] == "train"}
    assert set(train) == {"childes", "gutenberg"} and train["childes"]["cleaner"] == "aochildes"
    assert sum(r["words"] for r in train.values()) == sum(len(r["text"].split()) for r in rows)
    assert [r["source"] for r in manifest["files"] if r["split"] == "dev"] == ["dev"]
    assert any("unknown BabyLM source 'dev'" in line for line in lines)


def test_a_text_dataset_and_bad_dataset_files(tmp_path):
    rng = random.Random(2)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "switchboard.txt").write_text("\n".join(sentences(rng, 200)) + "\n")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "switchboard.txt").write_text("\n".join(sentences(rng, 100)) + "\n")
    manifest, _ = logged(train_dir=tmp_path / "train", dev_dir=tmp_path / "dev", out=tmp_path / "prep")
    assert [r["cleaner"] for r in manifest["files"]] == ["switchboard", "switchboard"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "no text column"}) + "\n")
    res = CliRunner().invoke(main, ["prepare", "--train-dir", str(bad), "--dev-dir", str(tmp_path / "dev"),
                                    "--out", str(tmp_path / "p2")])
    assert res.exit_code == 1 and "no text column (has body)" in res.output and not (tmp_path / "p2").exists()
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["prepare", "--train-dir", str(tmp_path / "empty"), "--dev-dir",
                                    str(tmp_path / "dev"), "--out", str(tmp_path / "p3")])
    assert res.exit_code == 1 and "no *.train files and no parquet / jsonl / txt" in res.output


def test_data_verify_names_the_release_a_dir_holds(tmp_path):
    train, dev = write_2024(tmp_path / "copy")
    manifest = tmp_path / "babylm-2024-test.txt"
    manifest.write_text("".join(f"{git_blob_sha1(p)} {p.parent.name}/{p.name}\n"
                                for d in (train, dev) for p in sorted(d.iterdir())))
    res = CliRunner().invoke(main, ["data", "verify", str(tmp_path / "copy"), "--manifest", str(manifest), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["release"] == "babylm-2024-test" and report["releases"][0]["identical"] == 12
    assert {r["status"] for r in report["files"]} == {"identical"}
    res = CliRunner().invoke(main, ["data", "verify", str(tmp_path / "copy"), "--manifest", str(manifest)])
    assert "release: babylm-2024-test (12 of its 12 files here" in res.output
    (train / "childes.train").write_text("changed\n")
    res = CliRunner().invoke(main, ["data", "verify", str(tmp_path / "copy"), "--manifest", str(manifest), "--json"])
    assert res.exit_code == 1
    status = {(r["split"], r["source"]): r["status"] for r in json.loads(res.output)["files"]}
    assert status[("train_10M", "childes")] == "modified" and status[("dev", "childes")] == "identical"
    bad = tmp_path / "bad.txt"
    bad.write_text("not a manifest\n")
    res = CliRunner().invoke(main, ["data", "verify", str(tmp_path / "copy"), "--manifest", str(bad)])
    assert res.exit_code == 1 and "bad.txt:1" in res.output
