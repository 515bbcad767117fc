"""Typed run configs: dataclasses, YAML presets shipped in `bbl/presets/`, and `--set section.key=value` overrides.

A config has three sections: `model` (architecture), `training` (Trainer settings) and `distill` (KD settings,
read by `bbl distill` only). Unknown keys and wrong types are errors that list the valid keys.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from bbl.errors import BblError, UsageError, as_usage_error
from bbl.io import parse_yaml

Architecture = typing.Literal["gpt2", "llama"]
LRScheduler = typing.Literal["cosine", "linear", "constant", "constant_with_warmup"]
Precision = typing.Literal["auto", "fp32", "bf16", "fp16"]
"""The numeric precision a model runs in: fp32, bf16 or fp16, or auto, which each use defines (training.precision:
bf16 where supported, else fp16 on a GPU, fp32 on CPU; the dump's `DumpConfig.dtype`: fp32 weights with bf16
autocast on a GPU)."""
LossImpl = typing.Literal["chunked", "hf"]
TargetKind = typing.Literal["topk", "sampled", "hybrid"]
"""What a cache stores per position (attribute `targets`; docs/cache-format.md): topk: the k most probable ids,
their log-probs and the tail's log mass; sampled: `num_samples` ids drawn with replacement from p_T (Anshumann et
al. 2025); hybrid: topk's arrays plus `num_samples` ids drawn from the tail renormalised."""
KDVariant = typing.Literal["topk_tail", "topk_renorm", "sampled", "hybrid", "exact_match", "uld", "gold", "alm"]
Reduction = typing.Literal["token_mean", "babyllama"]
DivergenceName = typing.Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_rkl", "tvd", "akl"]
"""What the KD term measures between teacher and student (`distill.divergence`; each registered by name in
`bbl.losses.divergences`, which says which cache readings it supports)."""
Objective = typing.Literal["clm", "mlm"]
"""A training phase's objective: clm (causal mask, next-token CE) or mlm (bidirectional mask, CE on masked tokens)."""
MLMTarget = typing.Literal["previous", "own"]
ULDForm = typing.Literal["boizard", "tempered"]
"""How `kd_variant: uld` weighs and tempers ULD (`distill.uld_form`): as its source runs it, or bbl's earlier form."""
ALMWeighting = typing.Literal["alpha", "gradmag"]
"""How `kd_variant: alm` weighs CE and ALM (`distill.alm_weighting`): fixed alpha, or by inverse gradient norms."""
WindowOffset = typing.Literal["fixed", "random"]
"""Where an epoch cuts the train windows (`training.window_offset`; `bbl.data.windows`)."""

REDUCTIONS = typing.get_args(Reduction)
PAPER_TEMPERATURE = 2.0
"""The softening temperature of Baby Llama (Section 3.2): dump-logits' default, and online distillation's when
neither the config nor a cache gives one."""
BABYLM_CHECKPOINTS = tuple([n * 1_000_000 for n in range(1, 10)] + [n * 10_000_000 for n in range(1, 11)])
"""The BabyLM 2025-2026 submission checkpoints: every 1M words up to 10M, then every 10M up to 100M."""


def check_literals(obj, section: str) -> None:
    """Refuse a dataclass field whose value is not one of its `Literal` annotation's choices.

    Raises:
        UsageError: naming `section.field`, the value and the choices.
    """
    for name, hint in typing.get_type_hints(type(obj)).items():
        value = getattr(obj, name)
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # an optional Literal: None, or a choice
            if value is None:
                continue
            hint = next((a for a in typing.get_args(hint) if typing.get_origin(a) is typing.Literal), hint)
        if typing.get_origin(hint) is typing.Literal and value not in typing.get_args(hint):
            raise UsageError(f"{section}.{name} {value!r}: use one of {', '.join(typing.get_args(hint))}")


def check_finite(obj, section: str) -> None:
    """Refuse a float field of a config dataclass that is NaN or infinite (YAML's `.nan`, `.inf`, or `1e400`): no
    bound check catches NaN (every comparison with it is false), and an infinite epoch count or rate is no run.

    Raises:
        UsageError: naming `section.field` and the value.
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{section}.{f.name} {value}: must be a finite number")


def parse_word_checkpoints(value) -> tuple[int, ...]:
    """`training.word_checkpoints`: null, "babylm" (`BABYLM_CHECKPOINTS`) or a list of positive word counts.

    Raises:
        UsageError: anything else, naming the key and the accepted values.
    """
    if value is None:
        return ()
    if value == "babylm":
        return BABYLM_CHECKPOINTS
    if isinstance(value, str):  # --set training.word_checkpoints=1000000,2000000
        try:
            value = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            pass
    if isinstance(value, list | tuple) and value and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                          for v in value):
        return tuple(sorted(set(value)))
    raise UsageError(f"training.word_checkpoints {value!r}: use babylm or a list of positive word counts, "
                   f"e.g. [1000000, 2000000]")


@dataclass(frozen=True)
class Phase:
    """One phase of `training.objective_schedule`: `epochs` consecutive epochs of one objective."""

    objective: Objective
    epochs: int


def parse_objective_schedule(value) -> tuple[Phase, ...]:
    """`training.objective_schedule`: null (every epoch causal, as before) or phases "OBJECTIVE:EPOCHS" as one
    comma-separated string or a YAML list, e.g. "clm:4,mlm:16,clm:4" (AntLM's BabyLlama schedule, Yu et al.
    2024).

    Raises:
        UsageError: an unknown objective, a phase of zero or fractional epochs, or a malformed entry; one line naming
            the key and the accepted form.
    """
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    form = "OBJECTIVE:EPOCHS phases, e.g. clm:4,mlm:16,clm:4"
    phases = []
    for item in items:
        objective, sep, epochs = str(item).strip().partition(":")
        if objective not in typing.get_args(Objective):
            raise UsageError(f"training.objective_schedule {value!r}: unknown objective {objective!r}; use "
                           f"{' or '.join(typing.get_args(Objective))} in {form}")
        if not sep or not epochs.strip().isdigit() or int(epochs) <= 0:
            raise UsageError(f"training.objective_schedule {value!r}: {str(item).strip()!r} needs a whole number of "
                           f"epochs >= 1; use {form}")
        phases.append(Phase(objective, int(epochs)))
    if not phases:
        raise UsageError(f"training.objective_schedule {value!r}: no phase; use {form} (or null)")
    return tuple(phases)


@dataclass
class ModelConfig:
    architecture: Architecture = "llama"
    """`gpt2` (GPT2LMHeadModel) or `llama` (LlamaForCausalLM)."""
    n_layer: int = 2
    """Transformer blocks."""
    n_head: int = 2
    """Attention heads."""
    n_kv_head: int | None = None
    """LLaMA key/value heads (grouped-query attention; BabyLlama-2's 345M: 5 for 15 heads); None = n_head, plain
    multi-head attention as in Baby Llama. GPT-2 has no such option."""
    hidden_size: int = 32
    """Residual width (GPT-2 `n_embd`)."""
    intermediate_size: int = 64
    """MLP width (GPT-2 `n_inner`)."""
    max_position_embeddings: int = 128
    """Positions (GPT-2 `n_positions`): 128 for the paper's GPT-2, 256 for its LLaMAs."""
    vocab_size: int | None = None
    """Vocabulary; None takes the prepared tokenizer's. Set, it must equal it."""

    def __post_init__(self):
        check_finite(self, "model")
        for name in ("n_layer", "n_head", "hidden_size", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise UsageError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size is not None and self.vocab_size <= 0:
            raise UsageError(f"model.vocab_size must be >= 1 (or null), got {self.vocab_size}")
        check_literals(self, "model")
        if self.hidden_size % self.n_head:
            raise UsageError(f"model.hidden_size {self.hidden_size} is not divisible by model.n_head {self.n_head}")
        if self.n_kv_head is not None:
            if self.n_kv_head <= 0 or self.n_head % self.n_kv_head:
                raise UsageError(f"model.n_kv_head {self.n_kv_head} must be >= 1 and divide model.n_head {self.n_head}")
            if self.architecture == "gpt2" and self.n_kv_head != self.n_head:
                raise UsageError("model.n_kv_head applies to llama only (GPT-2 has no grouped-query attention); drop it")


@dataclass
class TrainingConfig:
    epochs: float = 1.0
    """Passes over the training windows."""
    batch_size: int = 8
    """Global batch in windows per optimizer step (all devices and accumulation steps together)."""
    micro_batch_size: int | None = None
    """Windows per device per forward pass; None = batch_size / world size. Accumulation makes up the rest."""
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    lr_scheduler: LRScheduler = "cosine"
    """transformers scheduler name; the paper uses cosine."""
    warmup_steps: int = 200
    """Linear warm-up steps (the paper: 200 for every model)."""
    weight_decay: float = 0.0
    """AdamW weight decay (the paper: 0.1 for the student)."""
    seq_len: int = 128
    """Tokens per window."""
    seed: int = 0
    """Seed for initialisation and window order (and, unless data_seed is set, the data subsets)."""
    data_seed: int | None = None
    """Seed of the `max_train_windows` subset and the dev subset; None = `seed`. Fixing it lets runs of several
    seeds see the same windows, so a comparison over seeds is paired (`bbl study` sets it)."""
    dev_windows: int = 8192
    """Size of the fixed random dev subset used for eval loss (capped at what the dev stream has)."""
    max_train_windows: int | None = None
    """Train on a fixed seeded subset of this many windows (CPU presets); None = every window."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs; the schedule spans them)."""
    eval_every_steps: int | None = None
    """Also evaluate (and checkpoint) every N steps; evaluation always runs at each epoch end."""
    logging_steps: int = 10
    """Steps between metrics.jsonl lines."""
    precision: Precision = "auto"
    """auto (bf16 where supported, else fp16 on GPU, fp32 on CPU), fp32, bf16 or fp16."""
    report_to: list[str] = field(default_factory=list)
    """Opt-in trackers for the Trainer, e.g. [tensorboard] or [wandb]."""
    dataloader_workers: int = 0
    """DataLoader worker processes."""
    stop_after_steps: int | None = None
    """Stop as if killed after this many steps, keeping checkpoints (to exercise --resume); None in real runs."""
    loss_impl: LossImpl = "chunked"
    """chunked: the LM head, CE and KD computed a chunk of rows at a time, never holding the (B, S, V) logits
    (`bbl.chunked_loss`; equal values and gradients); hf: the model's own logits and loss (the reference)."""
    word_checkpoints: str | list[int] | None = None
    """Save an HF model dir with tokenizer at OUT/word_checkpoints/chck_{N}M each time the words seen reach N:
    `babylm` (every 1M words to 10M, then every 10M to 100M: the BabyLM 2025-2026 submission checkpoints) or a
    list of word counts (names: `bbl.words.checkpoint_name`). Words are counted exactly (`bbl.words`)."""
    max_words_seen: int | None = None
    """Refuse to start a run that would see more words than this, its teachers' training words included (the
    BabyLM rules count helper models' data; e.g. 100000000 for strict-small's 10 epochs of 10M words)."""
    max_epochs_seen: float | None = None
    """Refuse to start a run that would pass over its training windows more than this many times (the BabyLM
    2025-2026 rules: at most 10)."""
    loss_chunk_rows: int | None = None
    """Rows per chunk of the chunked loss; None = `bbl.chunked_loss.default_chunk_rows` (1,024, fewer for V > 16,384)."""
    objective_schedule: str | list[str] | None = None
    """Alternate causal and masked LM epoch by epoch (AntLM, Yu et al. 2024): phases "OBJECTIVE:EPOCHS", e.g.
    "clm:4,mlm:16,clm:4" (the paper's BabyLlama schedule); their epochs must add up to `epochs`. In mlm phases the
    same network runs with a bidirectional attention mask and learns to predict masked tokens (`mlm_probability`,
    `mlm_target`); dev CE is always the causal one, and the best checkpoint is chosen in the last phase only.
    None = every epoch causal. Needs a prepared tokenizer with `<mask>` (`bbl prepare`'s default)."""
    mlm_probability: float = 0.15
    """Share of each window's tokens an mlm phase selects (BERT's 15%; of them 80% become `<mask>`, 10% a random
    token, 10% stay), as AntLM."""
    mlm_target: MLMTarget = "previous"
    """Which output predicts a masked token: previous (the position before it, as next-token prediction, "MNTP";
    the LM head keeps its causal meaning across phases) or own (the masked position itself, as BERT). The AntLM
    paper does not say which its BabyLlama used."""

    torch_compile: bool = False
    """Compile the model with `torch.compile` through the Trainer (transformers `TrainingArguments.torch_compile`,
    which hands accelerate a `TorchDynamoPlugin`; default backend inductor). The forward up to the last hidden state
    is compiled; bbl's chunked head, CE and KD stay eager. The first steps pay the compilation (tens of seconds on
    a CPU). Measured for the study student on a 2-core CPU: BENCHMARKS.md, "torch.compile"."""

    window_offset: WindowOffset = "fixed"
    """Where each epoch cuts the train windows. fixed: window n is tokens [n*S, (n+1)*S) in every epoch (Baby
    Llama's). random: BabyLlama-2's (`BabylmDataset(random_chunk=True)`, src/babyllama2/babylm_dataset.py of
    JLTastet/BabyLlama-2): in each epoch window n starts at n*S + an offset in [0, S) drawn for that window and
    epoch, seeded by `data_seed` (else `seed`), so a boundary falls elsewhere each epoch and `--resume` replays the
    same offsets; there are N//S - 1 windows so every offset fits. The ledger counts the words of the windows as
    cut. Dev (or selection) windows stay fixed. Cached distillation refuses random (a cache holds targets for the
    fixed windows it was dumped at); online distillation takes it."""

    @property
    def phases(self) -> tuple[Phase, ...]:
        """`objective_schedule` parsed (`parse_objective_schedule`); () when every epoch is causal."""
        return parse_objective_schedule(self.objective_schedule)

    @property
    def window_seed(self) -> int:
        """The seed of the run's window subsets (train and dev): `data_seed`, else `seed`."""
        return self.seed if self.data_seed is None else self.data_seed

    def __post_init__(self):
        check_finite(self, "training")
        check_literals(self, "training")
        if self.epochs <= 0 or self.lr <= 0:
            raise UsageError(f"training.epochs ({self.epochs}) and training.lr ({self.lr}) must be > 0")
        for name in ("warmup_steps", "weight_decay", "dataloader_workers", "seed"):
            if getattr(self, name) < 0:
                raise UsageError(f"training.{name} must be >= 0, got {getattr(self, name)}")
        if self.data_seed is not None and self.data_seed < 0:
            raise UsageError(f"training.data_seed must be >= 0 (or null), got {self.data_seed}")
        parse_word_checkpoints(self.word_checkpoints)
        phases = self.phases
        if phases and sum(p.epochs for p in phases) != self.epochs:
            raise UsageError(f"training.objective_schedule spans {sum(p.epochs for p in phases)} epochs but "
                           f"training.epochs is {self.epochs:g}; set training.epochs={sum(p.epochs for p in phases)}")
        if not 0.0 < self.mlm_probability <= 1.0:
            raise UsageError(f"training.mlm_probability {self.mlm_probability} must be in (0, 1]")
        if self.max_epochs_seen is not None and self.max_epochs_seen <= 0:
            raise UsageError(f"training.max_epochs_seen must be > 0 (or null), got {self.max_epochs_seen}")
        for name in ("micro_batch_size", "dev_windows", "max_train_windows", "max_steps", "eval_every_steps",
                     "stop_after_steps", "loss_chunk_rows", "max_words_seen"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"training.{name} must be >= 1 (or null), got {value}")
        for name in ("batch_size", "seq_len", "logging_steps"):
            if getattr(self, name) <= 0:
                raise UsageError(f"training.{name} must be positive, got {getattr(self, name)}")


def kd_temperature(distill: DistillConfig, cache_temperature: float | None) -> float:
    """The KD term's temperature T: `distill.temperature` if set, else the cache's (cached distillation), else the
    paper's (`PAPER_TEMPERATURE`, online distillation). The one place this rule is written."""
    return distill.temperature or cache_temperature or PAPER_TEMPERATURE


CACHE_KEYS = ("weight", "kd_variant", "temperature", "allow_retemper", "reduction", "divergence", "jsd_beta",
              "skew", "gold_matched_weight", "gold_unmatched_weight")
"""The keys of one cache's settings (`DistillConfig.caches`, `--cache PATH:KEY=VALUE,...`): its weight and the
`distill` keys a cache reads on its own; alpha and mlm_kd belong to the whole run."""


def check_cache_settings(settings, where: str) -> dict:
    """One cache's settings (`CACHE_KEYS`) with each value checked against its `DistillConfig` field's type (weight: a
    number >= 0). Returns a new dict.

    Raises:
        BblError: not a mapping, an unknown key (the valid ones listed), a value of the wrong type; naming `where`.
    """
    if not isinstance(settings, dict):
        raise BblError(f"{where}: {_kind(settings)}, not a mapping of {', '.join(CACHE_KEYS)}")
    hints = typing.get_type_hints(DistillConfig)
    out = {}
    for key, value in settings.items():
        if key not in CACHE_KEYS:
            run = " (it applies to the whole run: --set distill.KEY=VALUE)" if key in hints else ""
            raise BblError(f"{where}: unknown key {key}{run}; a cache takes {', '.join(CACHE_KEYS)}")
        if key == "weight":
            value = _coerce(value, float, f"{where}: weight")
            if value < 0:
                raise BblError(f"{where}: weight {value:g} must be >= 0")
        else:
            value = _coerce(value, hints[key], f"{where}: {key}")
        out[key] = value
    return out


def resolve_cache_weights(given: list[float | None]) -> list[float]:
    """The w_c of L = alpha*CE + (1-alpha) * sum_c w_c * T_c^2 * KD_c from the weights given (None: not given): they
    sum to 1, so alpha stays the CE's share and one cache gets w = 1 (today's loss); the caches without a weight
    share equally what the given ones leave (all None: 1/n each).

    Raises:
        BblError: a weight below 0; given weights that leave less than 0 for the others, or, all given, do not sum to
            1 (within 1e-6); naming the fix.
    """
    if any(w is not None and w < 0 for w in given):
        raise BblError(f"cache weights {given}: a weight must be >= 0")
    fixed = sum(w for w in given if w is not None)
    unset = sum(w is None for w in given)
    form = "the w_c of L = alpha*CE + (1-alpha) * sum_c w_c * T_c^2 * KD_c sum to 1"
    if unset and fixed > 1 + 1e-6:
        raise BblError(f"cache weights given sum to {fixed:g} > 1, leaving nothing for the {unset} cache(s) "
                       f"without one ({form}); lower them, e.g. --cache A:weight=0.7 --cache B:weight=0.3")
    if not unset and abs(fixed - 1) > 1e-6:
        raise BblError(f"cache weights sum to {fixed:g}; {form} (alpha alone weighs the CE): give weights that "
                       f"do, e.g. --cache A:weight=0.7 --cache B:weight=0.3, or leave one out to take the rest")
    share = max(1 - fixed, 0.0) / unset if unset else 0.0
    return [share if w is None else float(w) for w in given]


def parse_cache_spec(spec) -> tuple[str, dict]:
    """A `--cache PATH[:KEY=VALUE,...]` spec as (the location as typed, its settings checked by
    `check_cache_settings`). Values are read as YAML scalars; the split is at the last ':' followed by KEY=VALUE
    pairs only, so a URL (s3://bucket/x.zarr) or a path keeps its own colons.

    Raises:
        BblError: a malformed KEY=VALUE pair, an unknown key or a value of the wrong type, naming the spec.
    """
    text = str(spec)
    match = re.fullmatch(r"(?P<location>.+?):(?P<settings>[A-Za-z_]\w*=[^,]*(?:,[A-Za-z_]\w*=[^,]*)*)", text)
    if not match:
        return text, {}
    where = f"--cache {text}"
    raw = {}
    for pair in match["settings"].split(","):
        key, _, value = pair.partition("=")
        raw[key] = parse_yaml(value, where, fix="write KEY=VALUE pairs, e.g. PATH:kd_variant=uld,weight=0.5")
    settings = check_cache_settings(raw, where)
    try:  # the section's own checks (a temperature > 0, a known divergence...)
        DistillConfig(**{k: v for k, v in settings.items() if k != "weight"})
    except BblError as e:
        raise BblError(f"{where}: {e}") from None
    return match["location"], settings


@dataclass
class DistillConfig:
    alpha: float = 0.5
    """Weight of the hard-label CE; KD gets 1 - alpha (the paper: 0.5). L = alpha*CE + (1-alpha)*T^2*KD."""
    temperature: float | None = None
    """Softening temperature T; None takes the cache's (the paper: 2). Another value needs allow_retemper."""
    allow_retemper: bool = False
    """Accept a temperature other than the cache's, re-tempering the stored log-probs (`bbl.losses.retemper`)."""
    kd_variant: str | None = None
    """How the cache's rows are read into the KD term, a registered `bbl.losses.readings.KDReading`. None: the cache
    kind's default (the first of its `CacheKind.kd_variants`: topk_tail for a top-k cache, sampled, hybrid,
    exact_match for a cross-tokenizer one), topk_tail for online distillation. Else topk_tail (exact KL of the (k+1)-outcome coarsening) or topk_renorm (teacher renormalised over top-k), for
    top-k and hybrid caches; sampled (a sampled cache, `bbl.losses.sampled_kl`); hybrid (a hybrid cache,
    `bbl.losses.hybrid_kl`); exact_match, uld or gold (a cross_tokenizer cache, `bbl.losses.cross_tokenizer`: at
    the student positions aligned with a teacher position only, chunked as `training.loss_impl` says); alm (a
    cross_tokenizer cache dumped with ALM's arrays, `bbl.losses.alm`: the teacher's and student's likelihoods of
    the chunks between shared token boundaries, L = alpha*CE + (1-alpha)*ALM, no T^2). A cache of another kind is
    refused with one line."""
    mlm_kd: bool = False
    """In the mlm phases of `training.objective_schedule` (AntLM), also distil where it is defined: at each position
    that predicts a masked token (`training.mlm_target: previous`), the cached teacher distribution of that next
    token; L = alpha*MLM-CE + (1-alpha)*T^2*KD over those positions (token mean). False (default): mlm phases train
    on the masked CE alone and never read the cache. bbl's own option (AntLM has no teacher); cached, chunked only."""
    reduction: Reduction = "token_mean"
    """token_mean (KL averaged over positions, like CE) or babyllama (summed over positions / batch, the
    original code's nn.KLDivLoss(reduction='batchmean') on (B, S, V): ~S times the nominal weight)."""
    divergence: DivergenceName = "forward_kl"
    """What KD measures between the teacher's p and the student's q, on the (k+1)-outcome coarsening of a top-k
    cache (k ids + tail) or the full vocabulary online (`bbl.losses.divergences`): forward_kl (KL(p‖q), the paper's),
    reverse_kl (KL(q‖p)), jsd (GKD's generalised JSD, `jsd_beta`), skew_kl / skew_rkl (DistiLLM, `skew`), tvd (total
    variation), akl (adaptive KL, Wu et al. 2025). Top-k caches read topk_tail and online distillation take every one;
    topk_renorm refuses reverse_kl and akl (infinite: no teacher mass on the tail), sampled and hybrid targets take
    forward_kl only (the one with an unbiased estimator from draws); docs/cache-format.md, "Divergences"."""
    jsd_beta: float = 0.5
    """beta of `divergence: jsd` (TRL's GKDConfig.beta): beta KL(p‖m) + (1-beta) KL(q‖m), m = beta p + (1-beta) q, in
    (0, 1); 0.5 is the symmetric JSD (at most ln 2). Its ends are forward_kl (0) and reverse_kl (1): set those."""
    skew: float = 0.1
    """The skew of DistiLLM's `skew_kl` KL(p ‖ skew p + (1-skew) q) and `skew_rkl` KL(q ‖ (1-skew) p + skew q), in
    (0, 1); the paper calls it alpha (default 0.1), unrelated to `alpha` here (the CE weight). At 0 they would be
    forward_kl / reverse_kl: set those."""
    gold_matched_weight: float | None = None
    """`kd_variant: gold`: the weight w_m of the exact-match KL over the teacher ids with a student twin; None (with
    `gold_unmatched_weight` None) takes GOLD's adaptive pair (trl `GOLDConfig.uld_hybrid_matched_weight` None: w_m
    = the share of teacher ids with a twin, w_u = 1 - w_m; `bbl.losses.cross_tokenizer.gold_weights`)."""
    gold_unmatched_weight: float | None = None
    """`kd_variant: gold`: the weight w_u of the ULD over the ids without a twin; set with `gold_matched_weight`."""
    uld_form: ULDForm = "boizard"
    """`kd_variant: uld`: boizard (Boizard et al. 2024 as their code runs it, Nicolas-BZRD/llm-recipes: teacher and
    student at T = 1, L = CE + uld_weight * ULD, alpha unused; the cache must be dumped at --temperature 1) or
    tempered (bbl's earlier form, which the recorded ULD results used: both at the cache's T, L = alpha*CE +
    (1-alpha)*T^2*ULD)."""
    uld_weight: float = 1.5
    """`kd_variant: uld` with uld_form boizard: lambda of L = CE + lambda * ULD (llm-recipes `distil_factor`: 1.5 in
    its configs/distillation.py and its README's command)."""
    alm_temperature: float = 100.0
    """`kd_variant: alm`: tau > 0, which divides chunk log-likelihoods before the binarisation (P^(1/tau)); not a
    softmax temperature (both sides' token distributions are at T = 1). The paper's 100 (Appendix B; tokenkit
    `binarization_temp`); its note 16 finds 5 better."""
    alm_gamma: float = 0.1
    """`kd_variant: alm`: gamma in [0, 1), the teacher's boundary mass after a chunk above which the chunk ends a
    group (chunks merge until then; tokenkit `merge_by_space_prob`, strict >); 0 = every chunk its own group. The
    paper's 0.1 (Appendix B)."""
    alm_debias: bool = True
    """`kd_variant: alm`: add each side's log-mass on its boundary ids (space, newline, tab, special) after a group
    to the group's log-likelihood (outcome chunk debiasing, Section 3.1; tokenkit `append_space`); on in the paper."""
    alm_weighting: ALMWeighting = "alpha"
    """`kd_variant: alm`: alpha (L = alpha*CE + (1-alpha)*ALM) or gradmag (each term weighted by the inverse norm of
    its gradient at the final hidden states, the weights summing to 1, alpha unused: GradMag, Section 3.3, as
    tokenkit's examples train [sft, alm_unconstrained] with `approx_gradmag_preserve_mag`, whose norms are the
    last block's parameters). At the paper's tau = 100 ALM's gradient is about 1% of CE's, so with alpha the CE
    decides (docs/results/cross-tokenizer.md). gradmag needs training.loss_impl=chunked and one --cache."""
    caches: list[dict] | None = None
    """Per-cache settings of a run that distils from several caches (`bbl distill --cache A --cache B:KEY=VALUE,...`,
    whose specs fill it): one mapping per --cache, in order, of `weight` (w_c >= 0 in L = alpha*CE + (1-alpha) *
    sum_c w_c * T_c^2 * KD_c; the weights sum to 1, those not given sharing equally what the given ones leave) and
    any of the keys a cache reads on its own (`CACHE_KEYS`: kd_variant, temperature, allow_retemper, reduction,
    divergence, jsd_beta, skew, gold_*), each overriding this section's value for that cache only. The run saves it
    resolved (each cache's kd_variant and weight), so --resume compares it. None: one cache, read with this
    section's settings (Baby Llama's logit mean of teachers of one tokenizer is one cache)."""

    def for_cache(self, c: int) -> DistillConfig:
        """The settings cache `c` is read with: this section with `caches[c]`'s keys (no `weight`) in place.

        Raises:
            BblError: `caches` has no entry `c`; a value the section refuses (naming `distill.caches[c]`).
        """
        if not self.caches or not 0 <= c < len(self.caches):
            raise BblError(f"distill.caches has no entry {c}; give one mapping per --cache")
        own = {k: v for k, v in self.caches[c].items() if k != "weight"}
        try:
            return dataclasses.replace(self, caches=None, **own)
        except BblError as e:
            raise BblError(f"distill.caches[{c}]: {e}") from None

    def cache_weights(self) -> list[float]:
        """Each cache's w_c (`caches`), summing to 1: as given, those not given sharing what the given ones leave.

        Raises:
            BblError: a weight below 0, given weights above 1, or all given and not summing to 1.
        """
        return resolve_cache_weights([e.get("weight") for e in self.caches or [{}]])

    def __post_init__(self):
        check_finite(self, "distill")
        if self.caches is not None:
            if not self.caches:
                raise BblError("distill.caches is empty; give one mapping per --cache, or null for one cache")
            self.caches = [check_cache_settings(e, f"distill.caches[{c}]") for c, e in enumerate(self.caches)]
            self.cache_weights()
            for c in range(len(self.caches)):
                self.for_cache(c)
        if (self.gold_matched_weight is None) != (self.gold_unmatched_weight is None):
            raise UsageError("distill.gold_matched_weight and distill.gold_unmatched_weight are set together (both "
                           "numbers, or both null for GOLD's adaptive weights)")
        for name in ("gold_matched_weight", "gold_unmatched_weight"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise UsageError(f"distill.{name} {getattr(self, name)} must be >= 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"distill.alpha {self.alpha} is outside [0, 1]")
        if self.uld_weight < 0:
            raise UsageError(f"distill.uld_weight {self.uld_weight} must be >= 0")
        if not self.alm_temperature > 0:
            raise UsageError(f"distill.alm_temperature {self.alm_temperature} must be > 0")
        if not 0.0 <= self.alm_gamma < 1.0:
            raise UsageError(f"distill.alm_gamma {self.alm_gamma} must be in [0, 1) (0: no merging)")
        for name, ends in (("jsd_beta", "0 is divergence=forward_kl, 1 is reverse_kl"),
                           ("skew", "0 is divergence=forward_kl / reverse_kl, 1 makes the divergence 0")):
            if not 0.0 < getattr(self, name) < 1.0:
                raise UsageError(f"distill.{name} {getattr(self, name)} must be in (0, 1) ({ends})")
        if self.temperature is not None and self.temperature <= 0:
            raise UsageError(f"distill.temperature {self.temperature} must be > 0")
        check_literals(self, "distill")


@dataclass
class Config:
    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


SECTIONS = {"model": ModelConfig, "training": TrainingConfig, "distill": DistillConfig}


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("bbl").joinpath("presets").iterdir() if p.name.endswith(".yaml"))


def _coerce(value, annotation, key: str):
    """Check/convert a YAML value against a field's type annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        if value not in args:
            raise UsageError(f"{key} {value!r}: use one of {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # the first type the value fits, e.g. str | list[int]
            try:
                return _coerce(value, option, key)
            except BblError:
                pass
        return _coerce(value, inner[-1], key)
    if origin is dict:
        _check_mapping(value, key, "--set")
        return {_coerce(k, args[0], key): _coerce(v, args[1], key) for k, v in value.items()}
    if annotation is Path and isinstance(value, str | Path):
        return Path(value)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise UsageError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value]
    if annotation is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads `1e-4` (no dot) as a string
            number = float(value)
        except ValueError:
            raise UsageError(f"{key}: expected float, got {value!r}") from None
        if not math.isfinite(number):
            raise UsageError(f"{key} {value!r}: must be a finite number")
        return number
    if annotation is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise UsageError(f"{key}: expected {annotation.__name__}, got {value!r}")
    if annotation is int:
        check_int_range(value, key)
    return value


SEED_MAX = 2**32 - 1
"""The largest seed: numpy's legacy seeding (the Trainer's `set_seed`) takes 0 to 2**32 - 1."""
INT64_MAX = 2**63 - 1


def check_int_range(value: int, key: str) -> None:
    """Refuse an integer setting no run can use: a seed (a key ending in `seed`) outside [0, 2**32 - 1], any other
    beyond an int64 (torch and numpy hold none larger).

    Raises:
        UsageError: naming the key, the value and the range.
    """
    if key.rsplit(".", 1)[-1].endswith("seed") and not 0 <= value <= SEED_MAX:
        raise UsageError(f"{key} {value}: a seed is 0 to {SEED_MAX} (2**32 - 1)")
    if abs(value) > INT64_MAX:
        raise UsageError(f"{key} {value}: too large (at most {INT64_MAX})")


def _kind(value) -> str:
    """What a YAML value is, in the words of an error line."""
    return {list: "a list", dict: "a mapping", str: "a string", bool: "true/false", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _check_mapping(values, what: str, source: str) -> None:
    if not isinstance(values, dict):
        raise UsageError(f"{source}: {what} is {_kind(values)}, not a mapping; write {what}: {{key: value, ...}}")


def _build(raw: dict, source: str, origins: dict[str, str] | None = None) -> Config:
    """The `Config` of a parsed YAML mapping; `origins` names where a `section.key` came from when not `source`
    (a `--set` value), so an error names what the user typed."""
    origins = origins or {}
    unknown = set(raw) - {"name", *SECTIONS}
    if unknown:
        raise UsageError(f"{source}: unknown section(s) {', '.join(sorted(map(str, unknown)))}; valid: name, "
                       f"{', '.join(SECTIONS)}")
    kwargs = {"name": str(raw.get("name", "custom"))}
    for section, cls in SECTIONS.items():
        values = raw.get(section) or {}
        _check_mapping(values, section, source)
        hints = typing.get_type_hints(cls)
        bad = sorted(f"{section}.{b}" for b in set(values) - set(hints))
        if bad:
            where = origins.get(bad[0], source)
            raise UsageError(f"{where}: unknown key(s) {', '.join(bad)}; valid {section} keys: {', '.join(hints)}")
        kwargs[section] = cls(**{k: _coerce(v, hints[k], f"{origins.get(f'{section}.{k}', source)}: {section}.{k}")
                                 for k, v in values.items()})
    return Config(**kwargs)


def _split_override(item: str, sections) -> tuple[str, str, object, str]:
    """(section, key, the value parsed as YAML, where it came from) of one `--set section.key=value`."""
    key, sep, value = item.partition("=")
    section, dot, sub = key.partition(".")
    if not sep or not dot or section not in sections:
        raise UsageError(f"--set {item!r}: use section.key=value with section in {', '.join(sections)}")
    origin = f"--set {item!r}"
    with as_usage_error():
        parsed = parse_yaml(value, origin, fix="write a YAML value (quote a string that has [ ] { } : #)")
    return section, sub, parsed, origin


def parse_overrides(overrides, sections: dict[str, type]) -> dict[str, dict]:
    """`--set section.key=value` items as {section: {key: value}}, each value read as YAML and checked against
    its field's annotation in `sections[section]` (a dataclass): the `--set` of the commands whose settings are
    one dataclass (`bbl dump-logits`: DumpConfig, `bbl eval`: EvalConfig, `bbl finetune`: FinetuneConfig).

    Raises:
        UsageError: a malformed item, an unknown section or key (the valid ones listed), a value of the wrong type.
    """
    out: dict[str, dict] = {}
    for item in overrides:
        section, key, value, origin = _split_override(item, sections)
        hints = typing.get_type_hints(sections[section])
        if key not in hints:
            raise UsageError(f"{origin}: unknown key {section}.{key}; valid {section} keys: {', '.join(hints)}")
        out.setdefault(section, {})[key] = _coerce(value, hints[key], f"{origin}: {section}.{key}")
    return out


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a preset by name (see `preset_names()`) or a YAML file, then apply `section.key=value` overrides.

    Raises:
        UsageError: unknown preset or file, malformed override, unknown key, wrong type or invalid value.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UsageError(f"{path}: config file not found; pass a YAML path or a preset ({', '.join(preset_names())})")
        with as_usage_error():  # the config is the user's settings, a file or not
            raw, source = parse_yaml(path.read_bytes(), str(path)), str(path)
        if raw is None:  # an empty file is a mistake, not a request for the defaults
            raise UsageError(f"{path}: empty config file; write its sections (name:, model:, training:, distill:) or "
                           f"name a preset ({', '.join(preset_names())})")
    else:
        name = str(name_or_path)
        if name not in preset_names():
            raise UsageError(f"unknown preset {name!r}; presets: {', '.join(preset_names())} (or a YAML path)")
        source = f"preset {name}"
        raw = parse_yaml(resources.files("bbl").joinpath("presets", f"{name}.yaml").read_text(), source)
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: a config is a mapping of sections (name:, model:, training:, distill:), not "
                       f"{_kind(raw)}")
    origins = {}
    for item in overrides:
        section, sub, parsed, origin = _split_override(item, SECTIONS)
        origins[f"{section}.{sub}"] = origin
        raw.setdefault(section, {})
        _check_mapping(raw[section] or {}, section, source)
        raw[section] = dict(raw[section] or {})
        raw[section][sub] = parsed
    return _build(raw, source, origins)
