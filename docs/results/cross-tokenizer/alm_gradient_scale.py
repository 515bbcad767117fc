"""How hard ALM pulls, next to the CE it is added to: the parameter-gradient norms of each term alone.

For a trained student (a run dir of the cross-tokenizer study) and batches of the study's cross-tokenizer cache,
writes the L2 norms over all parameters of the gradients of the mean CE, of the ALM term (token_mean, each at
weight 1; ALM at the paper's tau = 100, what the study ran, and at tau = 1 for scale) and of exact-match KL at
T = 1 (the study's exact-match arm's term), and their ratios to CE's; medians over the batches. A diagnostic of the study's ALM arm (docs/results/cross-tokenizer.md), not a benchmark.

    python docs/results/cross-tokenizer/alm_gradient_scale.py /work/studies/bl2 --runs xtok-alm/seed0 baseline/seed0 \
        --json docs/results/cross-tokenizer/alm-gradient-scale.json
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cross_tokenizer import batches  # noqa: E402  (the same cache batches as the step benchmark)


def norms(model, batch, boundary, settings) -> dict:
    from bbl.losses.alm import alm_head_loss
    from bbl.losses.cross_tokenizer import cross_tokenizer_head_loss
    from bbl.models.build import forward_without_logits

    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    for name, ce_w, kd_w in (("ce", 1.0, 0.0), ("alm", 0.0, 1.0)):
        hidden = forward_without_logits(model, batch["input_ids"]).hidden_states[-1]
        targets = {k: v for k, v in batch.items() if k not in ("input_ids", "labels")}
        loss, ce, kd = alm_head_loss(hidden, model.get_output_embeddings().weight, batch["labels"], targets,
                                     boundary=boundary, settings=settings, ce_weight=ce_w, kd_weight=kd_w)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        out[f"{name}_grad_norm"] = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))
        out["ce"], out["alm"] = float(ce), float(kd)
    out["alm_over_ce"] = out["alm_grad_norm"] / out["ce_grad_norm"]
    hidden = forward_without_logits(model, batch["input_ids"]).hidden_states[-1]  # exact-match KL alone (T = 1)
    loss, _, kd = cross_tokenizer_head_loss(hidden, model.get_output_embeddings().weight, batch["labels"], targets,
                                            variant="exact_match", alpha=0.0, temperature=1.0)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    out["exact_match"] = float(kd)
    out["exact_match_grad_norm"] = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))
    out["exact_match_over_ce"] = out["exact_match_grad_norm"] / out["ce_grad_norm"]
    return out


def main() -> None:
    from transformers import AutoModelForCausalLM

    from bbl.config import DistillConfig
    from bbl.losses.alm import ALMSettings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--runs", nargs="+", required=True, help="run dirs under WORKDIR/study/runs")
    ap.add_argument("--cache", default="cache/xtok-bpe-np.zarr")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    data, reader = batches(args.workdir / args.cache, 32, args.batches)
    boundary = torch.from_numpy(reader.read_static("student_boundary").astype(bool))
    paper = ALMSettings.from_config(DistillConfig())
    result = {"cache": args.cache, "batches": args.batches, "batch_size": 32,
              "paper_settings": {"temperature": paper.temperature, "gamma": paper.gamma, "debias": paper.debias},
              "runs": {}}
    for run in args.runs:
        model = AutoModelForCausalLM.from_pretrained(args.workdir / "study" / "runs" / run).float().train()
        per = {}
        for tau in (paper.temperature, 1.0):
            settings = ALMSettings(temperature=tau, gamma=paper.gamma, debias=paper.debias)
            rows = [norms(model, b, boundary, settings) for b in data]
            per[f"tau={tau:g}"] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        result["runs"][run] = per
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["runs"], indent=1))


if __name__ == "__main__":
    main()
