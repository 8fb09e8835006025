"""mkdocs hooks: render the Sphinx roles of the docstrings (``:func:`x```) as plain code."""

import re

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):(?=<code>)")


def on_page_content(html, **kwargs):
    """Drop the role prefix that mkdocstrings leaves before an inline code span."""
    return _ROLE.sub("", html)
