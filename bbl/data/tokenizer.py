"""The shared byte-level BPE tokenizer (Baby Llama, Section 3): train it, save it as a Hugging Face tokenizer dir.

NFKC normalisation, byte-level pre-tokenizer with a prefix space, specials `<pad>` `<s>` `</s>`, vocab 16000,
min_frequency 2, trained on the cleaned train split only. `AutoTokenizer.from_pretrained(dir)` loads the result.
Every tokenizer dir bbl writes (prepared dirs, teachers, students, word checkpoints, exported revisions) gets its
`tokenizer_config.json` from `write_portable_config`, which the BabyLM pipeline's transformers 4.51.3 and the
transformers 5 bbl installs read the same way.
By default a fourth special, `<mask>` (id 3), is reserved for masked-language-model phases (AntLM, Yu et al. 2024;
`training.objective_schedule`); `mask_token=False` gives Baby Llama's exact three specials.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from bbl.errors import BblError
from bbl.io import atomic_write_json, load_json

PAD, BOS, EOS, MASK = "<pad>", "<s>", "</s>", "<mask>"
SPECIAL_TOKENS = [PAD, BOS, EOS]
"""Baby Llama's specials (ids 0, 1, 2); `MASK` follows them (id 3) unless `mask_token=False`."""
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
PORTABLE_CLASS = "PreTrainedTokenizerFast"
"""The class a bbl tokenizer dir names: a plain `tokenizer.json` wrapper in transformers 4 and 5 alike (5 loads it as
`TokenizersBackend`, a name 4.x does not know)."""
LOAD_TIME_KEYS = ("backend", "is_local", "local_files_only")
"""Keys transformers 5 copies from `from_pretrained`'s arguments into a saved config; they describe one load, not
the tokenizer."""
RESAVE_HINT = ("re-run `bbl prepare` (a prepared dir) or save the tokenizer again with "
               "AutoTokenizer.from_pretrained(...).save_pretrained(DIR)")


def special_tokens(mask_token: bool = True) -> list[str]:
    """The specials of a trained tokenizer, in id order: `<pad> <s> </s>` and, with `mask_token`, `<mask>`."""
    return [*SPECIAL_TOKENS, MASK] if mask_token else list(SPECIAL_TOKENS)


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 16000, min_frequency: int = 2,
                    mask_token: bool = True, show_progress: bool = True, source: str = "the train split"):
    """Train the byte-level BPE tokenizer on an iterable of text blocks.

    Returns a `tokenizers.Tokenizer` whose vocabulary has exactly `vocab_size` entries, the specials first
    (`special_tokens(mask_token)`).

    Raises:
        BblError: if `vocab_size` cannot be reached: it is below the 256 bytes + the specials the byte-level
            alphabet needs, or the data has too few distinct pairs (at min_frequency) to learn that many merges.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = special_tokens(mask_token)
    floor = 256 + len(specials)
    if vocab_size < floor:
        raise BblError(f"--vocab-size {vocab_size} is below the byte-level minimum; use --vocab-size >= {floor}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    got = tokenizer.get_vocab_size()
    if got < vocab_size:
        raise BblError(
            f"{source}: only {got} tokens can be learned at min_frequency {min_frequency}, fewer than the requested "
            f"vocab {vocab_size}; use --vocab-size {got} or more training text"
        )
    return tokenizer


def save_tokenizer(tokenizer, out_dir: Path) -> Path:
    """Save `tokenizer` as a Hugging Face dir with bos/eos/pad (and mask, when it holds `<mask>`) set; returns the
    `tokenizer.json` path."""
    from transformers import PreTrainedTokenizerFast

    mask = {"mask_token": MASK} if tokenizer.token_to_id(MASK) is not None else {}
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                 model_max_length=1_000_000, **mask)
    save_hf_tokenizer(hf, out_dir)
    return out_dir / TOKENIZER_FILE


def save_hf_tokenizer(tokenizer, out_dir: Path) -> Path:
    """`tokenizer.save_pretrained(out_dir)` (a transformers tokenizer) with the portable `tokenizer_config.json`
    of `write_portable_config`: how every bbl model dir gets its tokenizer files. Returns `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    write_portable_config(out_dir)
    return out_dir


def portable_config(config: dict, tokenizer_json: dict) -> dict:
    """The `tokenizer_config.json` that transformers 4.51.3 (the BabyLM 2025 pipeline's pin) and 5.x read the same
    way, for a dir whose `tokenizer.json` is `tokenizer_json`: every key of `config` kept (special tokens, max
    length, added tokens) but the class, which becomes `PORTABLE_CLASS`, and the `LOAD_TIME_KEYS`, dropped.

    Where the pre-tokenizer has its own `add_prefix_space` (byte-level, as bbl's BPE), the config states the same
    value: 4.x's `PreTrainedTokenizerFast.__init__` sets that flag of the pre-tokenizer to the config's
    `add_prefix_space`, default False, so a config without it drops the space before a text's first word there
    (transformers 4.51.3 `tokenization_utils_fast.py`; 5.x leaves `tokenizer.json` as it is). A pre-tokenizer
    without the flag (a sequence, whitespace, metaspace) is left alone by both, and the config names none.
    """
    out = {k: v for k, v in config.items() if k not in LOAD_TIME_KEYS}
    out["tokenizer_class"] = PORTABLE_CLASS
    pre = tokenizer_json.get("pre_tokenizer")
    if isinstance(pre, dict) and "add_prefix_space" in pre:
        out["add_prefix_space"] = bool(pre["add_prefix_space"])
    else:
        out.pop("add_prefix_space", None)
    return out


def write_portable_config(tokenizer_dir: Path) -> bool:
    """Rewrite `tokenizer_dir/tokenizer_config.json` as `portable_config` says (atomically; `tokenizer.json`, and so
    every token id, untouched). Returns whether the file changed (False: it was portable already).

    Raises:
        BblError: the dir has no tokenizer.json, or a damaged tokenizer.json / tokenizer_config.json.
    """
    tokenizer_dir = Path(tokenizer_dir)
    file = tokenizer_dir / TOKENIZER_FILE
    if not file.is_file():
        raise BblError(f"{tokenizer_dir}: no {TOKENIZER_FILE}; pass a model dir bbl wrote (or a tokenizer dir)")
    config = load_json(tokenizer_dir / CONFIG_FILE, fix=RESAVE_HINT) or {}
    new = portable_config(config, load_json(file, fix=RESAVE_HINT))
    if new == config:
        return False
    atomic_write_json(tokenizer_dir / CONFIG_FILE, new)
    return True


def load_tokenizer(path: Path):
    """Load a `tokenizers.Tokenizer` from a tokenizer dir or a `tokenizer.json` file."""
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise BblError(f"{file}: no tokenizer found; run `bbl prepare` or pass a dir holding {TOKENIZER_FILE}")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception for a file it cannot read
        raise BblError(f"{file}: not a tokenizer file ({str(e).splitlines()[0]}); {RESAVE_HINT}") from None


def mask_token_id(path: Path) -> int | None:
    """The id of the `<mask>` special in a tokenizer dir (or tokenizer.json), or None when it has none (prepared
    with `--no-mask-token`, by an older bbl, or a pretrained teacher's tokenizer).

    Raises:
        BblError: if `path` holds no tokenizer.json.
    """
    tokenizer = load_tokenizer(path)
    added = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    return tokenizer.token_to_id(MASK) if MASK in added else None


def encode_lines(tokenizer, lines: list[str], *, batch_size: int = 8192) -> Iterator[list[int]]:
    """Encode lines (each keeps its trailing newline) in batches; yields one id list per line.

    Lines are encoded independently so `encode_batch` can use every core; with the prefix space each line starts
    the way a sentence in BLiMP does.
    """
    for start in range(0, len(lines), batch_size):
        for enc in tokenizer.encode_batch(lines[start:start + batch_size], add_special_tokens=False):
            yield enc.ids


def encode_lines_with_word_starts(tokenizer, lines: list[str], *, batch_size: int = 8192):
    """As `encode_lines`, yielding (ids, word starts per token (uint8)) per line (`bbl.data.words`)."""
    from bbl.data.words import word_starts_of_encodings

    for start in range(0, len(lines), batch_size):
        batch = lines[start:start + batch_size]
        encodings = tokenizer.encode_batch(batch, add_special_tokens=False)
        yield from zip((e.ids for e in encodings), word_starts_of_encodings(batch, encodings), strict=True)


def tokenizer_fingerprint(path: Path) -> str:
    """sha256 of a tokenizer's canonical JSON (key order and whitespace ignored), to tell tokenizers apart.

    Raises:
        BblError: if `path` (a dir or a tokenizer.json) holds no tokenizer.json.
    """
    import hashlib
    import json

    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise BblError(f"{file}: no tokenizer found; a model dir must hold its {TOKENIZER_FILE}")
    canonical = json.dumps(load_json(file, fix=RESAVE_HINT), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_same_tokenizer(fingerprint: str, expected: str, *, subject: str, reference, fix: str) -> None:
    """Refuse a teacher, checkpoint, prepared dir or cache whose tokenizer is not the one it must share: the one
    check every stage makes (compare `tokenizer_fingerprint`s).

    Args:
        fingerprint: the subject's tokenizer fingerprint; expected: the reference's.
        subject: what is checked, e.g. "teacher DIR" (the message starts with it).
        reference: what it must match, e.g. the prepared tokenizer dir or "the cache's".
        fix: what to do instead.
    Raises:
        BblError: "{subject} tokenizer differs from {reference}; {fix}".
    """
    if fingerprint != expected:
        raise BblError(f"{subject} tokenizer differs from {reference} ({str(fingerprint)[:12]} vs "
                       f"{str(expected)[:12]}); {fix}")
