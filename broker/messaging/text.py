"""Plain text made readable as HTML: escaped, paragraphs kept, links clickable.

Shared by the HTML part of emails and the dev outbox page, so a link in a text message is a
link a newcomer can click.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

from policies.names import one_line

ANCHOR = Markup('<a href="{url}">{url}</a>')  # format() escapes the url
URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")


def linkify(text: str) -> Markup:
    """Escape ``text`` and wrap each http(s) URL in an anchor."""
    pieces: list[Markup] = []
    position = 0
    for match in URL.finditer(text):
        pieces.append(escape(text[position:match.start()]))
        pieces.append(ANCHOR.format(url=match.group(0)))
        position = match.end()
    pieces.append(escape(text[position:]))
    return Markup("").join(pieces)


def paragraphs(text: str) -> list[Markup]:
    """Blank-line separated paragraphs, each linkified with line breaks kept."""
    blocks = [block.strip() for block in re.split(r"\n\s*\n", text.strip())]
    return [Markup("<br>\n").join(linkify(line) for line in b.splitlines()) for b in blocks if b]


# What a mail client would make a link of: a scheme, www., an address, a bare domain.
LINK_LIKE = re.compile(
    r"(?i)[a-z][a-z0-9+.-]*://\S*|www\.\S*|\S+@\S+|[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}(?:/\S*)?"
)


def inert(text: str) -> str:
    """Text someone other than the utility wrote (an owner's name in an invitation), fit to
    stand in an email to a third person: one line, and nothing a mail client would link. The
    email comes from the utility's own address; it must not carry a stranger's link."""
    return " ".join(LINK_LIKE.sub("", one_line(text)).split())
