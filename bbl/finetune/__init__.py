"""The finetune room: `bbl finetune` — the BabyLM 2025 pipeline's (Super)GLUE fine-tuning of a causal LM. Task
files and inputs: `data`; the classifier (the pipeline's head on the last real token): `model`; the recipe as
Trainer settings, metrics, the best epoch kept: `recipe`; the Trainer with the pipeline's train order: `trainer`; one
task end to end and the report: `run`."""

from bbl.finetune.data import FINETUNE_TASKS
from bbl.finetune.recipe import TASK_RECIPES, FinetuneConfig
from bbl.finetune.run import run_finetune

__all__ = ["FINETUNE_TASKS", "TASK_RECIPES", "FinetuneConfig", "run_finetune"]
