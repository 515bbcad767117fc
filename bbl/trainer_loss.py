"""The transformers `Trainer` with bbl's chunked head loss (`training.loss_impl: chunked`, the default).

`make_loss_trainer()` returns a `Trainer` subclass whose `compute_loss` runs the model for its last hidden states
only (`logits_to_keep` = no position, `output_hidden_states`), then computes the CE (and, in `bbl.distill`'s
subclass, the KD term) with `bbl.chunked_loss.chunked_head_loss`. The model stays an unmodified transformers
model, called through the Trainer's (possibly DDP-wrapped) module, so every checkpoint is a plain HF dir.
`loss_impl: hf` keeps the Trainer's own loss path, the reference of the equality tests and benchmarks.

The returned loss is the per-micro-batch mean (`loss_is_scaled_for_ga = False`: the Trainer divides by the
accumulation steps). HF's default normalises by the token count of the whole accumulated batch instead; the two
are equal in bbl because every window is full (each micro-batch counts the same number of labels).
"""

from __future__ import annotations


def make_loss_trainer():
    """A `Trainer` subclass taking `loss_impl` ("chunked" | "hf") and `loss_chunk_rows` keyword arguments."""
    from transformers import Trainer

    from bbl.chunked_loss import chunked_head_loss
    from bbl.models import forward_without_logits

    class LossTrainer(Trainer):
        def __init__(self, *args, loss_impl: str = "chunked", loss_chunk_rows: int | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_impl, self.loss_chunk_rows = loss_impl, loss_chunk_rows
            # None: the Trainer decides as for its own loss; False: ours is a per-micro-batch mean.
            self.loss_is_scaled_for_ga = False if loss_impl == "chunked" else None

        def student_hidden(self, model, input_ids):
            """(outputs, hidden (B, S, H) after the final norm, head weight (V, H)) without the (B, S, V) logits."""
            outputs = forward_without_logits(model, input_ids)
            head = self.accelerator.unwrap_model(model).get_output_embeddings()
            if getattr(head, "bias", None) is not None:
                raise ValueError("the chunked loss supports LM heads without bias (GPT-2, LLaMA); use loss_impl: hf")
            return outputs, outputs.hidden_states[-1], head.weight

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.loss_impl != "chunked":
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            outputs, hidden, weight = self.student_hidden(model, inputs["input_ids"])
            loss, _, _ = chunked_head_loss(hidden, weight, inputs["labels"], chunk_rows=self.loss_chunk_rows)
            return (loss, outputs) if return_outputs else loss

    return LossTrainer
