"""`bbl cache info | verify | repair --cache PATH|URL`: what a logit cache holds, whether it is intact and faithful,
and its repair. (The cache was a positional argument before 0.2; that form still works, with a warning.)"""

from __future__ import annotations

import json
import sys

import click

from bbl.cli.params import CacheArg, NonNegativeFloat, OneLineErrors, PathArg, Positive


def _cache_option(f):
    return click.option("--cache", "path", type=CacheArg, required=True,
                        help="The cache: a local path or an fsspec URL (s3://bucket/name.zarr).")(f)


@click.group(cls=OneLineErrors)
def cache():
    """Inspect, verify and repair logit caches."""


@cache.command("info", positional="--cache")
@_cache_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cache_info_cmd(path, as_json):
    """What a cache holds: settings, teachers, size, bytes/token, top-k mass, completeness."""
    from bbl.cache.inspect import cache_info

    info = cache_info(path)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    a = info["attributes"]
    click.echo(f"{path}: {'complete' if info['complete'] else 'INCOMPLETE'} ({info['chunks_done']}/{info['chunks']} "
               f"chunks), format v{a.get('format_version')}")
    from bbl.cache.kinds.registry import get_kind

    kind = a.get("targets", "topk")
    what = get_kind(kind).describe(a)
    click.echo(f"  targets {kind} ({what}), temperature {a['temperature']}, seq_len {a['seq_len']}, "
               f"vocab {a['vocab_size']}, ensemble {a['ensemble']}")
    for t in a.get("teachers", []):
        click.echo(f"  teacher {t['architecture']} {t['parameters'] / 1e6:.1f}M {t['path']}")
    click.echo(f"  tokenizer {a['tokenizer_fingerprint'][:16]}, train stream {a['train_stream_sha256'][:16]}")
    click.echo(f"  {info['windows']:,} windows, {info['bytes']:,} bytes"
               + (f", {info['bytes_per_token']:.1f} B/token" if "bytes_per_token" in info else ""))
    if "topk_mass_mean" in info:
        pct = ", ".join(f"p{k} {v:.3f}" for k, v in info["topk_mass_percentiles"].items())
        click.echo(f"  top-k mass: mean {info['topk_mass_mean']:.4f} ({pct})")
    if "aligned_fraction" in info:
        click.echo(f"  aligned: {info['aligned_fraction']:.4f} of student positions share a token boundary with the "
                   f"teacher; {info['teacher_tokens_per_window']:.1f} teacher tokens per window, teacher top-k mass "
                   f"{info['teacher_topk_mass_mean']:.4f}, {info['teacher_ids_with_student_twin']:.3f} of teacher ids "
                   f"have a student id of the same bytes")
    if "distinct_sampled_ids_mean" in info:
        click.echo(f"  draws: {info['num_samples']} per position, {info['distinct_sampled_ids_mean']:.2f} distinct ids "
                   f"on average")


def _max_kl_option() -> list[click.Option]:
    from bbl.cache.verify import DEFAULT_MAX_KL  # bbl.cache imports zarr and numpy: only when verify runs

    return [click.Option(["--max-kl"], type=NonNegativeFloat, default=DEFAULT_MAX_KL, show_default=True,
                         help="Fail above this mean KL (nats)."),
            click.Option(["--max-logprob-error"], type=NonNegativeFloat, default=None,
                         help="Fail above this max |stored - recomputed| log-prob (nats)  [default: 0.05 for a "
                              "float32 dump, 0.3 for bf16/fp16]")]


@cache.command("verify", positional="--cache", late_options=_max_kl_option)
@_cache_option
@click.option("--teacher", "teachers", type=PathArg, multiple=True,
              help="Recompute a sample of windows with these teachers and compare.")
@click.option("--sample", type=Positive, default=16, show_default=True, help="Windows to recompute.")
def cache_verify_cmd(path, teachers, sample, max_kl, max_logprob_error):
    """Every chunk present and passing its crc32c; with --teacher, first that they are the cache's teachers (by
    weights sha256), then the stored targets against a recomputation.

    Exits 1 naming each missing, corrupt or unfinished chunk (fix: `bbl cache repair`).
    """
    from bbl.cache.verify import verify_cache

    report = verify_cache(path, teacher_dirs=list(teachers), sample=sample, max_kl=max_kl,
                          max_error=max_logprob_error)
    for line in report.problems:
        click.echo(line, err=True)
    for line in report.info:
        click.echo(line)
    sys.exit(0 if report.ok else 1)


@cache.command("repair", positional="--cache")
@_cache_option
@click.option("--teacher", "teachers", type=PathArg, multiple=True, required=True,
              help="The teachers the cache was dumped with (checked by weights sha256; repeat for each).")
@click.option("--data", type=PathArg, default=None, help="Prepared dir of the dump (default: the one it records).")
@click.option("--device", default="cpu", show_default=True,
              help="Where the teachers run; the dump's device gives a byte-identical repair.")
@click.option("--device-map", default=None,
              help="accelerate placement of each teacher (e.g. auto)  [default: the dump's --device-map]")
def cache_repair_cmd(path, teachers, data, device, device_map):
    """Recompute exactly the missing, corrupt or unfinished chunks of a cache; an intact cache is left untouched."""
    from bbl.cache.repair import repair_cache
    from bbl.runtime import check_device

    r = repair_cache(path, list(teachers), data_dir=data, device=check_device(device), device_map=device_map,
                     log=click.echo)
    if r["repaired"]:
        click.echo(f"repaired {len(r['repaired'])} chunk(s) of {path}; `bbl cache verify --cache {path}` passes")
