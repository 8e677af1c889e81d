"""Stage 1 teachers: turn a question into a script (notes, written answer, spoken answer).

All teachers share one tiny interface so the pipeline never cares where a script
came from. A teacher never raises on a bad reply: it raises :class:`Reject` with a
short reason that the dataset card counts (malformed JSON, inconsistent answer,
timeout...), so garbage is never written and never silently lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Protocol

from lws_core.data.tasks import grade_written, key_facts
from lws_core.data.types import Note, Question, Reject, Script
from lws_core.schema import SCHEMA_VERSION

MAX_NOTES = 8
MAX_SPOKEN_WORDS = 60
# Full-Duplex-Bench's turn rule scores a reply of at most 3 words said in under a second as no take-over (a
# backchannel), so a spoken answer of "Next is 30." was a missed turn however right it was (stop 64: 5 of the 9
# turn-taking misses over 3 seeds). Every answer is a sentence of at least this many words: one past
# lws_core.eval.fdb_metrics.TURN_MAX_WORDS (a test ties the two; not imported, since lws_core.eval loads torch).
MIN_SPOKEN_WORDS = 4
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
    "line '**Answer:** <final answer>'), spoken (one or two short sentences, at least four words, saying the same answer)."
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
    if len(spoken.split()) < MIN_SPOKEN_WORDS:
        raise Reject("inconsistent", f"spoken answer shorter than {MIN_SPOKEN_WORDS} words (a listener hears a backchannel)")
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

    Calls go through :class:`~lws_core.data.teacher_client.LLMClient` (the judge's client too):
    many in flight, rate-limited, retried on 429/5xx/timeouts honouring ``Retry-After``, and cached
    by content, so a rerun or a resumed shard pays nothing twice. A reply that arrives but is
    malformed or inconsistent is rejected at once (asking again rarely fixes a model's
    misunderstanding and costs money); its raw reply stays cached, so a rerun rejects it for free.
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
        **client_options: Any,
    ) -> None:
        from lws_core.data.teacher_client import LLMClient

        self.temperature = temperature
        self.client = LLMClient(
            endpoint, model, api_key, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s,
            remember_failures=True, **client_options,
        )
        self.concurrency = self.client.concurrency

    @property
    def model(self) -> str:
        return self.client.model

    def messages(self, question: Question) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": _user_prompt(question)}]

    def script(self, question: Question) -> Script:
        from lws_core.data.teacher_client import CallFailed

        try:
            reply = self.client.complete(
                self.messages(question), temperature=self.temperature, response_format=RESPONSE_FORMAT, salt=CACHE_SALT
            )
        except CallFailed as e:
            raise Reject(_REJECT_KIND.get(e.kind, e.kind), e.detail) from None
        return check_script(reply.content, question)


# a cached reply is valid only for this schema (the session schema and the script's JSON schema)
CACHE_SALT = SCHEMA_VERSION + ":" + hashlib.sha256(json.dumps(SCRIPT_SCHEMA, sort_keys=True).encode()).hexdigest()[:16]
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "lws_script", "strict": True, "schema": SCRIPT_SCHEMA}}
_REJECT_KIND = {"http": "http_error"}


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


def make_teacher(cfg, cache_dir: str | None = None) -> Teacher:  # noqa: ANN001 - TeacherConfig
    """Build the configured teacher; a missing endpoint/model is a one-line ConfigError.

    ``cache_dir``: where the response cache lives when ``cfg.cache_dir`` is unset (synthesis passes
    the workspace, so a resumed shard finds what the killed one paid for).
    """
    from lws_core.errors import ConfigError

    if cfg.kind == "template":
        return TemplateTeacher()
    if cfg.kind == "openai":
        if not cfg.endpoint or not cfg.model:
            raise ConfigError("data.teacher: kind=openai needs endpoint and model")
        return OpenAITeacher(
            cfg.endpoint,
            cfg.model,
            os.environ.get(cfg.api_key_env),
            cfg.timeout_s,
            cfg.max_retries,
            cfg.backoff_s,
            cfg.temperature,
            concurrency=cfg.concurrency,
            requests_per_minute=cfg.requests_per_minute,
            tokens_per_minute=cfg.tokens_per_minute,
            max_backoff_s=cfg.max_backoff_s,
            rate_limit_patience_s=cfg.rate_limit_patience_s,
            cache_dir=cfg.cache_dir or cache_dir,
            usd_per_1k_input=cfg.usd_per_1k_input,
            usd_per_1k_output=cfg.usd_per_1k_output,
        )
    if not cfg.model:
        raise ConfigError("data.teacher: kind=hf needs model (a local directory)")
    return HFTeacher(cfg.model)
