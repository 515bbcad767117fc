"""The evaluate room: `bbl eval` — zero-shot minimal pairs (BLiMP, the supplement; `zero_shot`) and dev
perplexity for model dirs and logit-mean ensembles (`run`), and their tables and plot (`report`)."""

from bbl.evaluate.run import TASKS, EvalConfig, dev_perplexity, evaluate_models, load_model, run_eval

__all__ = ["TASKS", "EvalConfig", "dev_perplexity", "evaluate_models", "load_model", "run_eval"]
