"""Sanitize message HTML and derive plain text from it."""

from __future__ import annotations

import html
import re

import nh3

# Tags a message body may keep; everything else (scripts, forms, styles, iframes) is removed.
_ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "div", "dl",
    "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "li", "ol", "p", "pre",
    "q", "s", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "u", "ul",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "*": {"title", "lang", "dir", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "font": {"color"},
}
# cid: keeps inline images resolvable; data: and javascript: never survive.
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid"}


class SanitizedHtml(str):
    """HTML sanitize_html() returned: a later step (ingest) need not clean it again. Only this module makes one,
    and no input can, so the type is a safe sign of what was done."""

    __slots__ = ()


def sanitize_html(markup: str) -> SanitizedHtml:
    """Return `markup` with only harmless tags, attributes and link schemes left."""
    if isinstance(markup, SanitizedHtml):
        return markup
    return SanitizedHtml(nh3.clean(
        markup,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    ))


_BLOCK_END = re.compile(r"(?i)</(p|div|h[1-6]|li|tr|blockquote|pre|table)>|<br\s*/?>")
_TAG = re.compile(r"<[^>]+>")
_BLANK_LINES = re.compile(r"\n{3,}")


def html_to_text(markup: str) -> str:
    """Return readable plain text for an HTML body (for previews, search and SMS)."""
    cleaned = nh3.clean(markup, tags={"p", "div", "br", "li", "tr", "blockquote", "pre", "table"} | {
        f"h{level}" for level in range(1, 7)
    }, attributes={}, strip_comments=True)
    text = _BLOCK_END.sub("\n", cleaned)
    text = html.unescape(_TAG.sub("", text))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
