"""HTML mail bodies rendered to readable plain text with the standard library's parser."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from bridge.mail.mime import ZERO_WIDTH

# Elements whose content is never shown. Outlook adds <xml> islands and <o:p> paragraphs.
_HIDDEN = frozenset({"head", "style", "script", "title", "noscript", "template", "xml"})
_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody",
    "thead", "tfoot", "tr", "ul",
})
_CELL = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\f\v\r\n\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# A "<" that opens a tag, end tag, declaration or processing instruction closed before the
# next "<"; the scan from each "<" stops at the next one, so all of them take linear time.
_STRAY_LT = re.compile(r"<(?![a-zA-Z/!?][^<>]*>)")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden: list[str] = []  # open hidden elements, innermost last
        self._pre = 0  # depth of <pre>: its line breaks are kept
        self._line_has_text = False  # a block boundary breaks the line only once

    def _break(self, always: bool = False) -> None:
        if always or self._line_has_text:
            self.chunks.append("\n")
            self._line_has_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":  # a <head> never closed must not swallow the body
            self._hidden = [t for t in self._hidden if t not in ("head", "title")]
        if tag in _HIDDEN:
            self._hidden.append(tag)
        if self._hidden:
            return
        if tag == "pre":
            self._pre += 1
        if tag == "br" or tag in _BLOCK:
            self._break(always=tag == "br")
            if tag == "li":
                self.chunks.append("- ")
        elif tag in _CELL:
            self.chunks.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HIDDEN:  # <style/> opens nothing
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            if tag in self._hidden:
                del self._hidden[len(self._hidden) - 1 - self._hidden[::-1].index(tag)]
        elif tag in _BLOCK:
            self._break()
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        # A no-break space is content: Outlook writes blank lines as <p>&nbsp;</p>.
        if data.strip(" \t\r\n\f\v"):
            self._line_has_text = True
        if self._pre:
            self.chunks.append(data.replace("\r\n", "\n"))
        else:
            self.chunks.append(_SPACES.sub(" ", data))


def _tidy(text: str) -> str:
    """Trim every line, drop invisible padding, keep at most one blank line in a row."""
    text = ZERO_WIDTH.sub("", text)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _defuse(markup: str) -> str:
    """Drop comments and escape every `<` that does not open a complete tag, in linear time.

    The stdlib parser rescans the rest of the document at each unterminated comment, tag
    or declaration, which makes hostile input (e.g. ``"<!--" * 10**5``) quadratic; after
    this, every construct it meets is complete.
    """
    out: list[str] = []
    pos = 0
    while (start := markup.find("<!--", pos)) >= 0:
        out.append(markup[pos:start])
        end = markup.find("-->", start + 4)
        if end < 0:  # an unclosed comment hides the rest, as in browsers
            pos = len(markup)
            break
        out.append(" ")
        pos = end + 3
    out.append(markup[pos:])
    return _STRAY_LT.sub("&lt;", "".join(out))


def html_to_text(markup: str) -> str:
    """Readable text of an HTML document: no tags or hidden content, entities decoded."""
    parser = _TextExtractor()
    try:
        parser.feed(_defuse(markup))
        parser.close()
    except Exception:  # the parser asserts on some malformed declarations: strip tags instead
        stripped = re.sub(r"(?is)<(style|script|head)\b.*?</\1\s*>|<[^>]*>", " ", markup)
        return _tidy(html.unescape(stripped))
    return _tidy("".join(parser.chunks))
