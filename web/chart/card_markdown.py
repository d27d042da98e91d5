"""A CDS card's ``detail`` as HTML: CDS Hooks says it is GitHub-flavoured Markdown (the demo AI card has a table).

The text comes from a service the sandbox does not control, so raw HTML in it is escaped (``html: False``), link
targets are checked by markdown-it (no ``javascript:`` or ``data:``), images are off (the page's CSP would block
other origins anyway), and links open in a new tab so that a draft order on the page is not lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup


def _link_open(renderer: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    tokens[idx].attrSet("target", "_blank")
    tokens[idx].attrSet("rel", "noopener noreferrer")
    return str(renderer.renderToken(tokens, idx, options, env))


_md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"]).disable("image")
_md.add_render_rule("link_open", _link_open)


def markdown_html(text: str) -> Markup:
    return Markup(_md.render(text))
