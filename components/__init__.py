"""KFP components: one thin component per pipeline step (argument plumbing into lws_core.ops.steps)."""

from components.steps import build_components

__all__ = ["build_components"]
