"""Evaluation: LWS internal metrics, Full-Duplex-Bench, VoiceBench, consistency, reports."""

from lws_core.eval.internal import EvalSummary, evaluate

__all__ = ["EvalSummary", "evaluate"]
