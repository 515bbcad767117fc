"""The train room: one recipe (`bbl.train.recipe.train_lm`: config → data → model → Trainer → HF dir) for
teachers, the baseline student and, through its hooks, the distilled student; the batching and train order it
uses (`batching`), the Trainer with the chunked loss (`trainer`) and the words-seen ledger (`ledger`)."""

from bbl.train.recipe import CONFIG_FILE, RUN_FILE, train_lm

__all__ = ["CONFIG_FILE", "RUN_FILE", "train_lm"]
