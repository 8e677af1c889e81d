"""What the two stand-in pretraining loops share: one optimizer step, and the loss they report.

Both are plain PyTorch loops (see their modules for why not the Trainer); this
keeps their bookkeeping identical: an exponential moving average of the loss,
logged every ``every`` steps to ``on_log`` (the MLflow step run) and shown on a
progress bar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def optimizer_step(loss: torch.Tensor, params: Iterable[torch.nn.Parameter], opt: Any, sched: Any, clip: float = 1.0) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(params), clip)
    opt.step()
    sched.step()


class LossLog:
    """EMA of a loss: ``losses`` holds (step, ema) every ``every`` steps and at the end."""

    def __init__(self, name: str, total: int, desc: str, progress: bool, on_log: Callable[[int, dict], None] | None, every: int = 20) -> None:
        self.name, self.total, self.every, self.on_log = name, total, every, on_log
        self.ema: float | None = None
        self.losses: list[tuple[int, float]] = []
        self.bar = None
        if progress:
            from lws_core.progress import progress as bar

            self.bar = bar(total=total, desc=desc, unit="step")

    def update(self, step: int, loss: torch.Tensor) -> None:
        lv = float(loss.detach())
        self.ema = lv if self.ema is None else 0.95 * self.ema + 0.05 * lv
        if step % self.every == 0 or step == self.total:
            self.losses.append((step, round(self.ema, 4)))
            if self.on_log is not None:
                self.on_log(step, {self.name: self.ema})
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({self.name: f"{self.ema:.3f}"})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
