"""Caches on an object store (issue 14), against a real S3-compatible server started here (moto's
`ThreadedMotoServer`), through zarr's fsspec store and s3fs: dump, kill and resume, 2-rank dump, damage named and
repaired, distill, and equality with a local dump."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from bbl.cache import CacheReader
from bbl.cli import main

from .helpers import SEQ, arrays, dump, error_lines, free_port, run, sigkill_after_chunks

pytestmark = pytest.mark.slow  # a real S3-compatible server (moto) and subprocess dumps
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

ARRAYS = ("input_ids", "window_idx", "topk_ids", "topk_logprobs", "tail_logprob", "chunk_done")
DUMP_ARGS = ["--topk", "8", "--seq-len", str(SEQ), "--chunk-windows", "4", "--batch-size", "2", "--max-windows",
             "24", "--device", "cpu"]


@pytest.fixture(scope="module")
def bucket():
    """A local S3 server with a fresh bucket; the AWS_* variables every s3fs client (and child process) reads."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="bbl")
    yield client
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def assert_same(a, b):
    for k in ARRAYS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def cli_dump_argv(teachers, prepared, out, nproc=1) -> list[str]:
    head = [sys.executable, "-m", "bbl"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port()),
        "-m", "bbl"]
    cmd = [*head, "dump-logits", "--teacher", str(teachers[0]), "--teacher", str(teachers[1]), "--data",
           str(prepared), "--cache", out, *DUMP_ARGS]
    return cmd


def cli_dump(teachers, prepared, out, nproc=1):
    return subprocess.run(cli_dump_argv(teachers, prepared, out, nproc), env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def local_cache(tiny_teachers, prepared, tmp_path_factory):
    path = tmp_path_factory.mktemp("local") / "c.zarr"
    dump(tiny_teachers, prepared, path)
    return path


def test_dump_to_s3_equals_a_local_dump_and_verifies(bucket, tiny_teachers, prepared, local_cache):
    url = "s3://bbl/direct.zarr"
    summary = dump(tiny_teachers, prepared, url)
    assert summary["bytes"] > 0
    assert_same(arrays(url), arrays(local_cache))
    keys = {o["Key"] for o in bucket.list_objects_v2(Bucket="bbl", Prefix="direct.zarr/")["Contents"]}
    assert "direct.zarr/zarr.json" in keys and "direct.zarr/topk_logprobs/c/2/0/0" in keys
    res = CliRunner().invoke(main, ["cache", "verify", "--cache", url])
    assert res.exit_code == 0 and "checksums OK" in res.output, res.output
    info = json.loads(CliRunner().invoke(main, ["cache", "info", "--cache", url, "--json"]).output)
    # the summary is measured before it is itself written into zarr.json
    assert info["complete"] and 0 < info["bytes"] - summary["bytes"] < 2000


def test_killed_dump_on_s3_resumes_to_the_same_store(bucket, tiny_teachers, prepared, local_cache):
    url = "s3://bbl/killed.zarr"
    sigkill_after_chunks(cli_dump_argv(tiny_teachers, prepared, url), url)
    done = CacheReader(url, allow_incomplete=True).attrs
    assert not done["complete"]
    r = cli_dump(tiny_teachers, prepared, url)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stdout
    assert_same(arrays(url), arrays(local_cache))
    assert CacheReader(url).attrs["complete"]


def test_two_rank_dump_to_s3_equals_a_one_process_dump(bucket, tiny_teachers, prepared, local_cache):
    url = "s3://bbl/two-rank.zarr"
    r = cli_dump(tiny_teachers, prepared, url, nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same(arrays(url), arrays(local_cache))
    assert CacheReader(url).attrs["complete"]


def test_a_deleted_chunk_object_is_named_and_repaired(bucket, tiny_teachers, prepared, local_cache):
    url = "s3://bbl/damaged.zarr"
    dump(tiny_teachers, prepared, url)
    bucket.delete_object(Bucket="bbl", Key="damaged.zarr/topk_logprobs/c/2/0/0")
    res = CliRunner().invoke(main, ["cache", "verify", "--cache", url])
    assert res.exit_code == 1 and "topk_logprobs chunk 2 (rows 8-11) is missing" in res.output, res.output
    res = CliRunner().invoke(main, ["cache", "repair", "--cache", url, "--teacher", str(tiny_teachers[0]), "--teacher",
                                    str(tiny_teachers[1])])
    assert res.exit_code == 0, res.output
    assert_same(arrays(url), arrays(local_cache))
    assert CliRunner().invoke(main, ["cache", "verify", "--cache", url]).exit_code == 0


def test_distill_streams_its_targets_from_s3(bucket, tiny_teachers, prepared, tmp_path):
    url = "s3://bbl/for-distill.zarr"
    dump(tiny_teachers, prepared, url, max_windows=None)
    res = CliRunner().invoke(main, ["distill", "student-tiny", "--data", str(prepared), "--out", str(tmp_path / "s"),
                                    "--cache", url, "--set", "training.max_steps=3",
                                    "--set", "training.max_train_windows=null"])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "s" / "bbl_run.json").read_text())
    assert run["distill_mode"] == "cached" and run["cache"] == url and run["global_step"] == 3


def test_a_url_without_its_backend_or_bucket_is_one_error_line(bucket, tiny_teachers, prepared):
    res = CliRunner().invoke(main, ["cache", "info", "--cache", "s3://bbl/nothing-here.zarr"])
    assert res.exit_code == 1 and res.output.startswith("error: s3://bbl/nothing-here.zarr: no logit cache there")
    res = CliRunner().invoke(main, ["cache", "info", "--cache", "nosuchscheme://x/y.zarr"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "nosuchscheme" in res.output, res.output


def test_missing_credentials_are_one_error_line(bucket, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"],
               AWS_DEFAULT_REGION="us-east-1")
    r = subprocess.run([sys.executable, "-m", "bbl", "cache", "info", "--cache", "s3://bbl/direct.zarr"], env=env,
                       capture_output=True, text=True, timeout=120)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stdout + r.stderr
    assert lines[0].startswith("error: s3://bbl/direct.zarr: cannot reach the store (NoCredentialsError")


def test_a_foreign_prefix_and_a_live_writers_lock_are_refused_on_s3(bucket, tiny_teachers, prepared):
    import socket

    bucket.put_object(Bucket="bbl", Key="notes/a.txt", Body=b"keep")
    argv = ["dump-logits", "--teacher", tiny_teachers[0], "--data", prepared, "--seq-len", 32, "--max-windows", 8,
            "--overwrite", "--cache"]
    res = run([*argv, "s3://bbl/notes"])
    assert res.exit_code == 1 and len(error_lines(res)) == 1 and "not a zarr store" in error_lines(res)[0], res.output
    assert bucket.get_object(Bucket="bbl", Key="notes/a.txt")["Body"].read() == b"keep"
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}  # this live test process
    bucket.put_object(Bucket="bbl", Key="held.zarr.bbl.lock", Body=json.dumps(holder).encode())
    res = run([*argv, "s3://bbl/held.zarr"])
    assert res.exit_code == 1 and "in use by another bbl run" in error_lines(res)[0], res.output
    gone = {**holder, "pid": 2 ** 22 + 7}  # no such process on this host: provably gone, the lock is broken
    bucket.put_object(Bucket="bbl", Key="held.zarr.bbl.lock", Body=json.dumps(gone).encode())
    res = run([*argv, "s3://bbl/held.zarr"])
    assert res.exit_code == 0, res.output
    assert "Contents" not in bucket.list_objects_v2(Bucket="bbl", Prefix="held.zarr.bbl.lock")
