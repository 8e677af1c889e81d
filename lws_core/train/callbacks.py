"""How training reports to the outside world without importing it (the MLflow adapter lives in ops/)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass
class TrainSummary:
    """What a finished training run reports: written beside the model as train_summary.json."""

    model_dir: str
    steps: int
    train_seconds: float
    tokens_per_s: float
    train_loss: float
    val_losses: dict[str, float] = field(default_factory=dict)
    val_state_accuracy: float | None = None
    parameters: int = 0
    backend: str = "deepspeed"
    zero_stage: int | None = None
    precision: str = "fp32"
    resumed_from: str | None = None
    config_digest: str = ""
    tokens: int = 0
    train_channel_losses: dict[str, float] = field(default_factory=dict)
    model_bytes: int = 0  # bytes of the saved weights, in saved_dtype
    saved_dtype: str = "float32"  # fp32, except ZeRO-3 with bf16/fp16 training (gathered 16-bit weights)
    truncated_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainCallback(Protocol):
    """Receives the per-channel losses every logging step, and the summary at the end."""

    def on_log(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_end(self, summary: TrainSummary) -> None: ...


class HistoryCallback:
    """Keeps every logged metric in memory (tests, reports, the pipeline's loss curves)."""

    def __init__(self) -> None:
        self.history: list[tuple[int, dict[str, float]]] = []
        self.summary: TrainSummary | None = None

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.history.append((step, dict(metrics)))

    def on_end(self, summary: TrainSummary) -> None:
        self.summary = summary
