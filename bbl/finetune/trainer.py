"""The fine-tuning Trainer: the transformers `Trainer` with the BabyLM pipeline's train order (`FullBatchSampler`:
each epoch a seeded permutation cut to whole batches). Its settings, optimizer and metrics are `bbl.finetune.recipe`'s;
`bbl.finetune.run` builds one per task."""

from __future__ import annotations

from transformers import Trainer

from bbl.finetune.recipe import FullBatchSampler


class FinetuneTrainer(Trainer):
    """A `Trainer` whose train order is `FullBatchSampler` (the pipeline's `shuffle=True, drop_last=True` train
    loader), seeded by `args.seed`, in batches of `args.per_device_train_batch_size`. Arguments: the `Trainer`'s."""

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        return FullBatchSampler(len(ds), batch_size=self.args.per_device_train_batch_size, seed=self.args.seed)
