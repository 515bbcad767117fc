"""Entity tracking (full, 3 files) per arm: mean ± std over seeds, the paired difference vs the baseline."""
import json
import sys
from pathlib import Path

sys.path.insert(0, "/work/main")
from bbl.study.stats import mean_std, paired_interval  # noqa: E402

root = Path("/work/antlm-study/full-et")


def et(name):
    r = json.loads(next(f for f in (root / name).glob("*.json") if f.name != "results.json").read_text())
    t = r["tasks"]["entity_tracking"]
    return {"overall": 100 * t["overall"], **{k: 100 * v for k, v in t["by_split"].items()}, "truncated": t["truncated"]}


rows = {arm: [et(f"{arm}-seed{s}") for s in range(3)] for arm in ("baseline", "cached")}
keys = ("overall", "regular", "ambiref", "move_contents")
print("| arm | entity tracking (%) | Δ vs baseline [95% CI] | regular | ambiref | move_contents |")
print("|---|---:|---|---:|---:|---:|")
for arm, rs in rows.items():
    cells = []
    for k in keys:
        m, sd = mean_std([r[k] for r in rs])
        cells.append(f"{m:.1f} ± {sd:.1f}")
        if k == "overall":
            if arm == "baseline":
                cells.append("")
            else:
                d = paired_interval([r[k] for r in rs], [r[k] for r in rows["baseline"]])
                lo, hi = d["ci95"]
                cells.append(f"{d['mean']:+.1f} [{lo:+.1f}, {hi:+.1f}]" + (" *" if lo > 0 or hi < 0 else ""))
    print(f"| {arm} | " + " | ".join(cells) + " |")
t = et("teacher-llama")
print(f"| teacher llama-study | {t['overall']:.1f} | | {t['regular']:.1f} | {t['ambiref']:.1f} | {t['move_contents']:.1f} |")
print("per seed:", {a: [round(r["overall"], 2) for r in rs] for a, rs in rows.items()},
      "truncated:", {a: [r["truncated"] for r in rs] for a, rs in rows.items()}, t["truncated"])
