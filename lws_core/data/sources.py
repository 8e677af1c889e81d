"""Where questions come from: the template generator, or a local jsonl/parquet/arrow file with a column mapping.

A file that cannot be read, or lacks the mapped question column, is a one-line
InputError naming the file and column; an individual row with an empty or
non-text question is a counted reject (``Reject("bad_row")``), never a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lws_core.data.types import Question, Reject
from lws_core.errors import InputError


class FileQuestions:
    """Random access to questions in a local dataset file (memory-mapped Arrow underneath)."""

    def __init__(self, path: str | Path, question_column: str = "question", answer_column: str | None = "answer") -> None:
        path = Path(path)
        if not path.exists():
            raise InputError(f"question source not found: {path}")
        suffix = path.suffix.lower()
        kinds = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow", ".csv": "csv"}
        try:
            if path.is_dir():
                from datasets import load_from_disk

                ds: Any = load_from_disk(str(path))
                if hasattr(ds, "keys"):
                    ds = ds[next(iter(ds.keys()))]
            elif suffix == ".arrow":
                from datasets import Dataset

                ds = Dataset.from_file(str(path))
            elif suffix in kinds:
                from datasets import load_dataset

                ds = load_dataset(kinds[suffix], data_files=str(path), split="train")
            else:
                raise InputError(f"{path}: unsupported question file type {suffix!r} (use .jsonl, .parquet, .arrow, .csv)")
        except InputError:
            raise
        except Exception as e:  # datasets/pyarrow raise many types on unreadable files
            raise InputError(f"{path}: cannot read questions ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
        cols = set(ds.column_names)
        if question_column not in cols:
            raise InputError(f"{path}: no column {question_column!r} (columns: {', '.join(sorted(cols))}); set data.source.question_column")
        if answer_column is not None and answer_column not in cols:
            raise InputError(f"{path}: no column {answer_column!r}; set data.source.answer_column (or null)")
        if len(ds) == 0:
            raise InputError(f"{path}: has no rows")
        self.path, self.ds, self.qc, self.ac = path, ds, question_column, answer_column

    def __len__(self) -> int:
        return len(self.ds)

    def get(self, i: int) -> Question:
        row = self.ds[i % len(self.ds)]
        q = row.get(self.qc)
        if not isinstance(q, str) or not q.strip():
            raise Reject("bad_row", f"{self.path} row {i % len(self.ds)}: empty or missing {self.qc!r}")
        a = row.get(self.ac) if self.ac else None
        answer = None if a is None or (isinstance(a, str) and not a.strip()) else str(a).strip()
        return Question.make(" ".join(q.split()), answer=answer, task_family="file")
