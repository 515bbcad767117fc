"""ALM's groups that end on a newline, against the rest: the teacher's and the student's group log-likelihoods
(LT, LS) and boundary log-masses after the group (DT, DS), means over the groups of a few cache batches.

The study's student inserts a prefix space at every line start (`Ġshe` after `Ċ`), its foreign teacher does not
(`she`), so after a newline the student's boundary mass is near 1 and the teacher's small: where a group ends on a
newline its debiasing terms disagree by construction. This counts how often that happens, for a trained student
(a run dir of the study). A diagnostic of docs/results/cross-tokenizer.md, not a benchmark.

    python docs/results/cross-tokenizer/alm_line_end_groups.py /work/studies/bl2 baseline/seed0 \
        --json docs/results/cross-tokenizer/alm-line-end-groups.json
"""

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cross_tokenizer import batches  # noqa: E402  (the same cache batches as the step benchmark)


def main() -> None:
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from bbl.config import DistillConfig
    from bbl.losses.alm import ALMSettings, alm_group_losses, alm_groups, student_alm_logprobs
    from bbl.models.build import forward_without_logits

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("run", help="a run dir under WORKDIR/study/runs")
    ap.add_argument("--cache", default="cache/xtok-bpe-np.zarr")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    data, reader = batches(args.workdir / args.cache, 32, args.batches)
    boundary = torch.from_numpy(reader.read_static("student_boundary").astype(bool))
    newline = Tokenizer.from_file(str(args.workdir / "prepared" / "tokenizer" / "tokenizer.json")).token_to_id("Ċ")
    model = AutoModelForCausalLM.from_pretrained(args.workdir / "study" / "runs" / args.run).float().eval()
    paper = ALMSettings.from_config(DistillConfig())
    settings = ALMSettings(paper.temperature, paper.gamma, debias=False)
    parts = {"ends_on_newline": [], "other": []}
    for b in data:
        with torch.no_grad():
            hidden = forward_without_logits(model, b["input_ids"]).hidden_states[-1]
            token, mass = student_alm_logprobs(hidden @ model.get_output_embeddings().weight.T,
                                               b["alm_next_ids"].long(), boundary)
        t_boundary = b["alm_teacher_boundary"].double()
        group_end, _ = alm_groups(b["alm_start"].long(), t_boundary, settings.gamma)
        _, teacher_ll, student_ll = alm_group_losses(token, mass, b, settings)  # LT, LS: debias off
        r, e = group_end.nonzero(as_tuple=True)  # the groups in alm_group_losses' row-major order
        values = torch.stack([teacher_ll, student_ll, t_boundary[r, e], mass.double()[r, e]], 1)
        on_newline = b["input_ids"][r, e] == newline
        parts["ends_on_newline"].append(values[on_newline])
        parts["other"].append(values[~on_newline])
    out = {"run": args.run, "cache": args.cache, "batches": args.batches, "batch_size": 32, "gamma": settings.gamma}
    for name, chunks in parts.items():
        v = torch.cat(chunks)
        out[name] = {"groups": len(v), **dict(zip(("LT", "LS", "DT", "DS"), v.mean(0).tolist(), strict=True))}
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
