"""Training hyperparameters, in a module light enough to check options before anything starts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Every hyperparameter of a training run; all of it is logged to MLflow."""

    # A misspelt option is refused, never silently replaced by its default.
    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    epochs: int = Field(default=4, ge=1)
    batch_size: int = 128
    max_len: int = 64
    lstm_units: int = 64
    projection_dim: int = 128
    dropout: float = 0.3
    learning_rate: float = 2e-3
    # The learning rate is multiplied by this after every epoch.
    learning_rate_decay: float = Field(default=0.6, gt=0, le=1)
    checkpoint: str = "auto"
    train_embeddings: bool = False
    embedding_dim: int = 128
    vocab_size: int = 16000
    class_weighting: bool = True
    max_rows: int | None = Field(default=None, gt=0)
    # Extra (text, label) pairs from Sentinova's own templates (components/augment.py): the
    # negations, contrasts and neutral identity statements tweets rarely teach. Never suite texts.
    # Augmentation pairs per training tweet (0.4 of 48k tweets is about 19k pairs).
    augmentation_ratio: float = Field(default=0.4, ge=0, le=5, allow_inf_nan=False)
    # Loss weight of an augmentation pair relative to a tweet of the same class.
    augmentation_weight: float = Field(default=0.5, gt=0, allow_inf_nan=False)
