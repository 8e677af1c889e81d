"""Stage 1 teachers: turn a question into a script (notes, written answer, spoken answer).

All teachers share one tiny interface so the pipeline never cares where a script
came from. A teacher never raises on a bad reply: it raises :class:`Reject` with a
short reason that the dataset card counts (malformed JSON, inconsistent answer,
timeout...), so garbage is never written and never silently lost.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Protocol

from lws_core.data.tasks import grade_written, key_facts
from lws_core.data.types import Note, Question, Reject, Script

MAX_NOTES = 8
MAX_SPOKEN_WORDS = 60
MAX_WRITTEN_CHARS = 2000

SCRIPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["notes", "written", "spoken"],
    "properties": {
        "notes": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["text", "depends_on_word"],
                "properties": {"text": {"type": "string"}, "depends_on_word": {"type": "integer"}},
            },
        },
        "written": {"type": "string"},
        "spoken": {"type": "string"},
    },
}

SYSTEM_PROMPT = (
    "You script a voice assistant that writes while it listens. Given the user's question as numbered words, "
    "return JSON with: notes (short markdown lines to write while listening, each with depends_on_word = the index "
    "of the last word it needs; never mention a word before it is said), written (the markdown answer; end with a "
    "line '**Answer:** <final answer>'), spoken (one or two short sentences saying the same answer)."
)


class Teacher(Protocol):
    name: str

    def script(self, question: Question) -> Script: ...


def check_script(raw: Any, question: Question) -> Script:
    """Validate a teacher's JSON reply against the schema and the question; Reject with a reason otherwise."""
    if isinstance(raw, str):
        m = re.search(r"\{.*\}", raw, re.DOTALL)
        if not m:
            raise Reject("malformed", "no JSON object in reply")
        try:
            raw = json.loads(m.group(0))
        except json.JSONDecodeError as e:
            raise Reject("malformed", f"invalid JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise Reject("malformed", "reply is not a JSON object")
    missing = [k for k in ("notes", "written", "spoken") if k not in raw]
    if missing:
        raise Reject("malformed", f"missing {', '.join(missing)}")
    notes_raw, written, spoken = raw["notes"], raw["written"], raw["spoken"]
    if not isinstance(notes_raw, list) or not isinstance(written, str) or not isinstance(spoken, str):
        raise Reject("malformed", "wrong field types")
    if len(notes_raw) > MAX_NOTES:
        raise Reject("malformed", f"{len(notes_raw)} notes > {MAX_NOTES}")
    notes = []
    n_words = len(question.words)
    for n in notes_raw:
        if not isinstance(n, dict) or not isinstance(n.get("text"), str) or not isinstance(n.get("depends_on_word"), int):
            raise Reject("malformed", "a note is not {text: str, depends_on_word: int}")
        if not 0 <= n["depends_on_word"] < n_words:
            raise Reject("inconsistent", f"note depends on word {n['depends_on_word']} of {n_words}")
        text = n["text"] if n["text"].endswith("\n") else n["text"] + "\n"
        notes.append(Note(text, n["depends_on_word"]))
    written, spoken = written.strip() + "\n", " ".join(spoken.split())
    if not spoken or not re.search(r"[A-Za-z0-9]", spoken):
        raise Reject("inconsistent", "empty spoken answer")
    if len(written.strip()) == 0 or len(written) > MAX_WRITTEN_CHARS:
        raise Reject("inconsistent", "written answer empty or too long")
    if len(spoken.split()) > MAX_SPOKEN_WORDS:
        raise Reject("inconsistent", f"spoken answer longer than {MAX_SPOKEN_WORDS} words")
    if question.answer is not None and not grade_written(question.answer, written):
        raise Reject("inconsistent", "written answer does not state the reference answer")
    if not key_facts(spoken) <= key_facts(written) | key_facts(question.text):
        raise Reject("inconsistent", "spoken answer states numbers the written answer does not")
    return Script(notes, written, spoken)


class TemplateTeacher:
    """Offline default: template questions carry their script; other questions with a reference answer get a plain one."""

    name = "template"

    def script(self, question: Question) -> Script:
        if question.script is not None:
            return question.script
        if not question.answer:
            raise Reject("no_answer", "the template teacher needs a reference answer for non-template questions")
        a = " ".join(question.answer.split())
        return check_script({"notes": [], "written": f"**Answer:** {a}", "spoken": f"The answer is {a}."}, question)


def _user_prompt(question: Question) -> str:
    """The question as numbered words, preceded by earlier turns (a follow-up refers to what was written)."""
    words = " ".join(f"[{i}]{w}" for i, w in enumerate(question.words))
    ref = f"\nReference answer: {question.answer}" if question.answer else ""
    ctx = "".join(f"Earlier the user asked: {q}\nYou wrote:\n{w.strip()}\n" for q, w in question.context)
    return f"{ctx}Question words: {words}{ref}\nReply with JSON only."


class OpenAITeacher:
    """Any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, TGI, a hosted API), JSON-schema output.

    Transport failures (timeouts, 429, 5xx) are retried with exponential backoff;
    a reply that arrives but is malformed or inconsistent is rejected at once
    (asking again rarely fixes a model's misunderstanding and costs money).
    """

    name = "openai"

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        temperature: float = 0.2,
    ) -> None:
        self.url = endpoint.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions" if self.url.endswith("/v1") else "/v1/chat/completions"
        self.model, self.api_key = model, api_key
        self.timeout_s, self.max_retries, self.backoff_s, self.temperature = timeout_s, max_retries, backoff_s, temperature
        self._client = None
        self._pid = -1

    def _http(self):  # noqa: ANN202 - httpx.Client, created per process (safe after fork)
        import httpx

        if self._client is None or self._pid != os.getpid():
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(timeout=self.timeout_s, headers=headers)
            self._pid = os.getpid()
        return self._client

    def script(self, question: Question) -> Script:
        import httpx

        body = {
            "model": self.model,
            "temperature": self.temperature,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": _user_prompt(question)}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "lws_script", "strict": True, "schema": SCRIPT_SCHEMA}},
        }
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                r = self._http().post(self.url, json=body)
            except httpx.TimeoutException:
                last = "timeout"
                continue
            except httpx.HTTPError as e:
                last = f"http error {type(e).__name__}"
                continue
            if r.status_code == 429 or r.status_code >= 500:
                last = f"http {r.status_code}"
                continue
            if r.status_code != 200:
                raise Reject("http_error", f"http {r.status_code}")
            try:
                content = r.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise Reject("malformed", "reply is not a chat completion") from None
            return check_script(content if content is not None else "", question)
        raise Reject("timeout" if last == "timeout" else "unreachable", f"{last} after {self.max_retries + 1} tries")


class HFTeacher:
    """A local transformers causal LM (a directory on disk; nothing is downloaded)."""

    name = "hf"

    def __init__(self, path: str, max_new_tokens: int = 256) -> None:
        from pathlib import Path

        from lws_core.errors import InputError

        if not Path(path).is_dir():
            raise InputError(f"teacher model directory not found: {path}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot load a causal LM ({str(e).splitlines()[0]})") from None
        self.model.eval()
        self.max_new_tokens = max_new_tokens

    def script(self, question: Question) -> Script:
        import torch

        prompt = f"{SYSTEM_PROMPT}\n{_user_prompt(question)}\n"
        if getattr(self.tok, "chat_template", None):
            prompt = self.tok.apply_chat_template(
                [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": _user_prompt(question)}],
                tokenize=False,
                add_generation_prompt=True,
            )
        ids = self.tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(
                **ids, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=self.tok.pad_token_id or 0
            )
        text = self.tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        return check_script(text, question)


def make_teacher(cfg) -> Teacher:  # noqa: ANN001 - TeacherConfig
    """Build the configured teacher; a missing endpoint/model is a one-line ConfigError."""
    from lws_core.errors import ConfigError

    if cfg.kind == "template":
        return TemplateTeacher()
    if cfg.kind == "openai":
        if not cfg.endpoint or not cfg.model:
            raise ConfigError("data.teacher: kind=openai needs endpoint and model")
        return OpenAITeacher(cfg.endpoint, cfg.model, os.environ.get(cfg.api_key_env), cfg.timeout_s, cfg.max_retries)
    if not cfg.model:
        raise ConfigError("data.teacher: kind=hf needs model (a local directory)")
    return HFTeacher(cfg.model)
