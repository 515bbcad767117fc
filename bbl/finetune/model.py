"""A sequence classifier on a causal LM as the BabyLM 2025 pipeline builds it: the transformer without its LM
head (`AutoModel`), and the pipeline's two-layer head on one position's final hidden state.

babylm/evaluation-pipeline-2025 `evaluation_pipeline/finetune/classifier_model.py`: `ClassifierHead` (LayerNorm
without affine → Linear(H, H) → GELU → LayerNorm → Dropout(0.1) → Linear(H, labels)) and
`ModelForSequenceClassification` (which position it reads). transformers' own `LlamaForSequenceClassification` /
`GPT2ForSequenceClassification` also read the last non-pad token (found from `pad_token_id`), but their head is
one bias-free Linear, not the pipeline's, so bbl keeps the transformers body and adds the pipeline's head.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

ReadPosition = Literal["last", "first"]
READ_POSITIONS = ("last", "first")
CLASSIFIER_DROPOUT = 0.1
"""run.py `--classifier_dropout` default."""
CLASSIFIER_LAYER_NORM_EPS = 1e-5
"""run.py `--classifier_layer_norm_eps` default."""


def read_positions(attention_mask: torch.Tensor, read: ReadPosition = "last") -> torch.Tensor:
    """The position the classifier reads in each row.

    Args:
        attention_mask: (B, S) int or bool, 1 at real tokens, 0 at padding (either side).
        read: "last": the rightmost real token, the only position a causal model's state has seen the whole
            input at; "first": position 0 (what `classifier_model.py` reads without `--take_final`).
    Returns:
        (B,) int64 positions.
    """
    if read == "first":
        return torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)
    steps = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (steps * attention_mask.long()).argmax(-1)


class ClassifierHead(nn.Module):
    """The pipeline's head: LayerNorm (no affine) → Linear(H, H) → GELU → LayerNorm (no affine) → Dropout →
    Linear(H, num_labels), with PyTorch's default initialisation (`classifier_model.py` `ClassifierHead`)."""

    def __init__(self, hidden_size: int, num_labels: int, *, dropout: float = CLASSIFIER_DROPOUT,
                 eps: float = CLASSIFIER_LAYER_NORM_EPS):
        super().__init__()
        self.nonlinearity = nn.Sequential(
            nn.LayerNorm(hidden_size, eps, elementwise_affine=False),
            nn.Linear(hidden_size, hidden_size),
            nn.GELU(),
            nn.LayerNorm(hidden_size, eps, elementwise_affine=False),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_labels),
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, H) float hidden states -> (B, num_labels) logits."""
        return self.nonlinearity(hidden)


class CausalLMClassifier(nn.Module):
    """A causal LM's transformer body (its final norm included) with `ClassifierHead` on one position.

    `forward(input_ids, attention_mask, labels=None)` returns a transformers `SequenceClassifierOutput` whose
    `logits` are (B, num_labels) float and `loss` the mean cross-entropy (nats) when `labels` (B,) int64 are given,
    so the transformers Trainer drives it as any HF classifier.
    """

    def __init__(self, body: nn.Module, hidden_size: int, num_labels: int, *, read: ReadPosition = "last",
                 dropout: float = CLASSIFIER_DROPOUT):
        super().__init__()
        if read not in READ_POSITIONS:
            raise ValueError(f"read must be one of {READ_POSITIONS}, not {read!r}")
        self.transformer, self.read, self.num_labels = body, read, num_labels
        self.classifier = ClassifierHead(hidden_size, num_labels, dropout=dropout)

    @classmethod
    def from_pretrained(cls, model_dir, num_labels: int, *, read: ReadPosition = "last",
                        dropout: float = CLASSIFIER_DROPOUT) -> CausalLMClassifier:
        """The body of the causal LM in `model_dir` (`AutoModel.from_pretrained`, its LM head left out, as
        `classifier_model.py` loads it) with a freshly initialised head (seed the RNG first)."""
        from transformers import AutoModel
        from transformers.utils import logging

        level = logging.get_verbosity()
        logging.set_verbosity_error()  # the unused lm_head weights are expected: say nothing about them
        try:
            body = AutoModel.from_pretrained(str(model_dir))
        finally:
            logging.set_verbosity(level)
        return cls(body, body.config.hidden_size, num_labels, read=read, dropout=dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, S, H)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        logits = self.classifier(hidden[rows, read_positions(attention_mask, self.read)])
        loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)
