"""SpamAssassin public corpus: raw RFC 822 mails in folders easy-ham-1, hard-ham-1, spam-2, ...

The text a model sees is the subject plus the readable body: headers are dropped (they identify the
2002 mail servers, which would let a model cheat), HTML is reduced to its text, quoted reply lines
and mailing-list footers are removed, and the result is cut to `max_chars` at a word boundary.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import html
import re
from html.parser import HTMLParser
from pathlib import Path

from tqdm.auto import tqdm

from ..text import tidy_whitespace, truncate_chars
from . import find_data_dir

# About 200 words: enough to tell spam from ham, short enough for a 135M model's prompt.
MAX_CHARS = 1200
FOOTER_MAX_CHARS = 600
_FOOTER_RULE = re.compile(r"^\s*(?:[_=\-]{10,}|--)\s*$")
# List tags such as "[ILUG]" or "[Spambayes]" in subjects name the list, so they go too.
_SUBJECT_TAG = re.compile(r"\[[\w.\- ]{1,20}\]\s*")
_URL = re.compile(r"https?://\S+|www\.\S+")


class _HTMLText(HTMLParser):
    """Collects the visible text of an HTML body, skipping scripts, styles and comments."""

    _BLOCKS = {"br", "p", "div", "tr", "li", "table", "h1", "h2", "h3", "h4", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # malformed spam HTML: fall back to dropping tags crudely
        return html.unescape(re.sub(r"<[^>]+>", " ", markup))
    return "".join(parser.parts)


def _decode(part) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        return ""
    charset = part.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name in a spam header
        return payload.decode("latin-1", errors="replace")


def _subject(message) -> str:
    raw = message.get("Subject", "") or ""
    try:
        pieces = email.header.decode_header(str(raw))
        return "".join(p.decode(c or "latin-1", errors="replace") if isinstance(p, bytes) else p for p, c in pieces)
    except (LookupError, ValueError, email.errors.HeaderParseError):
        return str(raw)


def mail_to_text(raw: bytes, max_chars: int = MAX_CHARS) -> str:
    """Subject and readable body of one raw mail, headers stripped, cut to max_chars."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    plain, markup = [], []
    for part in message.walk():
        if part.is_multipart() or part.get_filename():
            continue
        kind = part.get_content_type()
        if kind == "text/plain":
            plain.append(_decode(part))
        elif kind == "text/html":
            markup.append(html_to_text(_decode(part)))
    body = "\n".join(plain) if any(p.strip() for p in plain) else "\n".join(markup)
    # Quoted reply lines belong to another mail.
    lines = [line for line in body.replace("\r\n", "\n").split("\n") if not line.lstrip().startswith(">")]
    # Mailing-list software appends "____\nExmh-workers mailing list ..." and people sign after "--":
    # both are giveaways for ham, so short tails after such rules are cut, innermost last.
    while True:
        rules = [i for i, line in enumerate(lines) if _FOOTER_RULE.match(line)]
        if not rules or len("\n".join(lines[rules[-1]:])) > FOOTER_MAX_CHARS:
            break
        lines = lines[: rules[-1]]
    body = tidy_whitespace(_URL.sub("<url>", "\n".join(lines)))
    subject = _SUBJECT_TAG.sub("", tidy_whitespace(_subject(message)).replace("\n", " ")).strip()
    return truncate_chars(f"Subject: {subject}\n\n{body}".strip(), max_chars)


def load_spam(root: str | Path, max_chars: int = MAX_CHARS, progress: bool | None = None) -> list[dict]:
    """Records {id, group, text, label in {"ham", "spam"}} for every mail under root/data/<folder>/.

    progress: None shows a bar only on a terminal (parsing 6,000 mails takes a few seconds).
    """
    data = find_data_dir(root, "data")
    files = sorted(p for p in data.glob("*/*") if p.is_file() and p.suffix != ".json" and not p.name.startswith("."))
    records = []
    for path in tqdm(files, desc="spam: parse mails", unit="mail", disable=None if progress is None else not progress):
        folder = path.parent.name
        mail_id = f"{folder}/{path.name.split('.')[0]}"
        records.append({
            "id": mail_id,
            "group": f"spam:{mail_id}",
            "text": mail_to_text(path.read_bytes(), max_chars),
            "label": "spam" if folder.startswith("spam") else "ham",
        })
    return records
