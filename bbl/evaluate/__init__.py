"""The evaluate room: `bbl eval` — the BabyLM 2025 zero-shot suite (task data: `tasks`; BLiMP the lm-eval way:
`zero_shot`; the pipeline's completion ranking: `ranking`; WUG: `wug`; reading: `reading`; one task end to end:
`suite`; the pipeline's predictions.json: `predictions`) and dev perplexity for model dirs and logit-mean ensembles
(`run`), and their tables and plot (`report`)."""

from bbl.evaluate.run import TASKS, EvalConfig, dev_perplexity, evaluate_models, load_model, run_eval

__all__ = ["TASKS", "EvalConfig", "dev_perplexity", "evaluate_models", "load_model", "run_eval"]
