"""The registered model: an MLflow pyfunc that loads an LWS model directory and simulates sessions.

A pyfunc wrapper (not ``mlflow.transformers``): the LWS model is an HF causal LM plus an audio
encoder and projector saved as one directory, which no flavor knows; the wrapper ships that
directory as an artifact and runs the engine's time-synchronous ``simulate`` on audio files.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

ARTIFACT_KEY = "lws_model"


class LWSPyfunc(mlflow.pyfunc.PythonModel):
    """``predict`` takes audio file paths and returns, per file, the written document, the spoken
    text and the per-unit states (``L`` listen / ``S`` speak) of a simulated full-duplex session."""

    def load_context(self, context) -> None:  # noqa: ANN001
        from lws_core.engine import Engine

        self.engine = Engine.from_dir(context.artifacts[ARTIFACT_KEY], lean=True)

    def predict(self, context, model_input: list[str], params: dict[str, Any] | None = None) -> list[dict[str, str]]:  # noqa: ANN001
        from lws_core.audio import load_audio

        out = []
        for p in model_input:
            res = self.engine.simulate(load_audio(p))
            out.append(
                {
                    "written": res.written,
                    "spoken": res.session.spoken_text(),
                    "states": "".join("S" if u.state == "speak" else "L" for u in res.units),
                }
            )
        return out
