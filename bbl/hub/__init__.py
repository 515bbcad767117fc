"""The hub room: `bbl export` — a training run as a git repository in the Hugging Face Hub's layout (`export`:
`main` the final model, a `chck_{N}M` branch per word checkpoint) with a model card generated from the run's
ledger and eval results (`card`), and the commands that publish it."""

from bbl.hub.export import export_run

__all__ = ["export_run"]
