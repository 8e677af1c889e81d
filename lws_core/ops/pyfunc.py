"""The registered model: an MLflow pyfunc that loads an LWS model directory and simulates sessions."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

ARTIFACT_KEY = "lws_model"


class LWSPyfunc(mlflow.pyfunc.PythonModel):
    """``predict`` takes audio file paths (a list, or a DataFrame column ``audio``) and returns, per file,
    the written document, the spoken text and the unit states of a simulated session."""

    def load_context(self, context) -> None:  # noqa: ANN001
        from lws_core.engine import Engine

        self.engine = Engine.from_dir(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # noqa: ANN001
        from lws_core.audio import load_audio

        paths = list(model_input["audio"]) if hasattr(model_input, "columns") else list(model_input)
        out = []
        for p in paths:
            res = self.engine.simulate(load_audio(p))
            out.append(
                {
                    "written": res.written,
                    "spoken": res.session.spoken_text(),
                    "states": "".join("S" if u.state == "speak" else "L" for u in res.units),
                }
            )
        return out
