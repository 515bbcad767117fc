"""Per-arm means and paired differences vs a reference arm for the extra tasks and the study's metrics."""
import json
import sys
from pathlib import Path

from bbl.study.stats import mean_std, paired_interval

root = Path("/work/antlm-study")


def metric(arm, seed):
    r = json.loads(next((root / "extra" / f"{arm}-seed{seed}").glob("seed*.json")).read_text())["tasks"]
    return {"ewok": 100 * r["ewok"]["overall"], "wug": r["wug_adj"]["spearman"],
            "eye": 100 * r["reading"]["eye_tracking"], "spr": 100 * r["reading"]["self_paced_reading"]}


arms = sys.argv[1].split(",")
refs = dict(a.split("=") for a in sys.argv[2].split(","))  # arm=reference
seeds = range(3)
rows = {a: [metric(a, s) for s in seeds] for a in arms}
print("| arm | EWoK (%) | Δ EWoK [95% CI] | WUG rho | Δ WUG [95% CI] | eye tracking (%) | self-paced (%) |")
print("|---|---:|---|---:|---|---:|---:|")
for a in arms:
    cells = []
    for k, f in (("ewok", 1), ("wug", 3)):  # decimals shown
        m, sd = mean_std([r[k] for r in rows[a]])
        cells.append(f"{m:.{f}f} ± {sd:.{f}f}")
        if a in refs:
            d = paired_interval([r[k] for r in rows[a]], [r[k] for r in rows[refs[a]]])
            lo, hi = d["ci95"]
            star = " *" if lo > 0 or hi < 0 else ""
            cells.append(f"{d['mean']:+.{f}f} [{lo:+.{f}f}, {hi:+.{f}f}]{star} vs {refs[a]}")
        else:
            cells.append("")
    for k in ("eye", "spr"):
        m, sd = mean_std([r[k] for r in rows[a]])
        cells.append(f"{m:.2f} ± {sd:.2f}")
    print(f"| {a} | " + " | ".join(cells) + " |")
