"""Training: collator (loss masks per channel), HF Trainer + DeepSpeed, resume, teacher-forced metrics."""

from lws_core.train.callbacks import HistoryCallback, TrainCallback, TrainSummary
from lws_core.train.collator import LWSCollator, encode_row
from lws_core.train.metrics import evaluate_channel_losses
from lws_core.train.trainer import train

__all__ = ["HistoryCallback", "LWSCollator", "TrainCallback", "TrainSummary", "encode_row", "evaluate_channel_losses", "train"]
