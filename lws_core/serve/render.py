"""The written document as safe HTML: markdown-it-py (CommonMark + tables), raw HTML off, code highlighted.

Rendering happens on the server so the page needs no build step, no CDN and no
vendored library, and so model output can never inject script: raw HTML in the
document is escaped, and markdown-it's link validation drops ``javascript:``
and ``data:`` URLs. Highlighting is a small tokenizer (comments, strings,
numbers, keywords) good enough for the languages a speech assistant writes.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

KEYWORDS = {
    "python": "and as assert async await break class continue def del elif else except False finally for from global if import in is "
    "lambda None nonlocal not or pass raise return True try while with yield match case self",
    "js": "async await break case catch class const continue default delete do else export extends false finally for function if "
    "import in instanceof let new null return super switch this throw true try typeof undefined var void while yield of",
    "bash": "if then else elif fi for while do done case esac function in return export local echo exit set",
    "sql": "select from where insert into values update set delete create table drop alter join left right inner outer on group by "
    "order having limit as and or not null is in distinct count sum avg min max",
    "c": "auto break case char const continue default do double else enum extern float for goto if int long register return short "
    "signed sizeof static struct switch typedef union unsigned void volatile while bool true false include define fn let mut "
    "pub use impl match struct enum trait func package import var type interface map go chan",
}
ALIASES = {
    "py": "python", "python3": "python", "javascript": "js", "ts": "js", "typescript": "js", "json": "js", "jsx": "js",
    "sh": "bash", "shell": "bash", "zsh": "bash", "console": "bash", "cpp": "c", "c++": "c", "java": "c", "rust": "c",
    "rs": "c", "go": "c", "golang": "c", "csharp": "c", "cs": "c", "kotlin": "c", "swift": "c", "postgres": "sql",
}
HASH_COMMENT = {"python", "bash"}


@lru_cache(maxsize=16)
def _lexer(lang: str) -> re.Pattern[str]:
    comment = r"#[^\n]*" if lang in HASH_COMMENT else (r"--[^\n]*" if lang == "sql" else r"//[^\n]*|/\*[\s\S]*?\*/")
    kws = "|".join(sorted(map(re.escape, KEYWORDS[lang].split()), key=len, reverse=True))
    flags = re.IGNORECASE if lang == "sql" else 0
    return re.compile(
        rf"(?P<com>{comment})"
        r"|(?P<str>\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|\"(?:\\.|[^\"\\\n])*\"?|'(?:\\.|[^'\\\n])*'?|`(?:\\.|[^`\\])*`?)"
        r"|(?P<num>\b(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\b)"
        rf"|(?P<kw>\b(?:{kws})\b)",
        flags,
    )


def highlight(code: str, lang: str) -> str:
    """Code -> escaped HTML with ``<span class="tok-…">``; unknown languages are escaped only."""
    lang = ALIASES.get(lang.lower().strip(), lang.lower().strip())
    if lang not in KEYWORDS:
        return html.escape(code)
    out: list[str] = []
    pos = 0
    for m in _lexer(lang).finditer(code):
        out.append(html.escape(code[pos : m.start()]))
        out.append(f'<span class="tok-{m.lastgroup}">{html.escape(m.group())}</span>')
        pos = m.end()
    out.append(html.escape(code[pos:]))
    return "".join(out)


@lru_cache(maxsize=1)
def _markdown():  # noqa: ANN202 - markdown_it.MarkdownIt
    from markdown_it import MarkdownIt

    def hl(code: str, lang: str, _attrs: str) -> str:
        return highlight(code, lang or "")

    return MarkdownIt("commonmark", {"html": False, "highlight": hl, "breaks": True}).enable("table").enable("strikethrough")


def render_markdown(text: str) -> str:
    """The whole document -> HTML (an unclosed code fence renders as code while it is being written)."""
    return _markdown().render(text)
