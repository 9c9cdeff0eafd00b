"""A person's name as we keep it: one line of visible text.

Names reach emails to other people (an owner's name in an invitation), portals' ID tokens and
the support console. A line break or a control character in one would let whoever chose the
name lay out text of their own in those places, so every name is made one line on the way in
(registration, profile, an upstream's claims). Nothing else of it is judged: names are
whatever people are called.
"""

from __future__ import annotations

import unicodedata


def one_line(text: str) -> str:
    """``text`` with control and format characters removed and every run of white space
    (line breaks included) made one space, trimmed."""
    visible = "".join(
        " " if character.isspace() else character
        for character in text
        if character.isspace() or unicodedata.category(character)[0] != "C"
    )
    return " ".join(visible.split())
