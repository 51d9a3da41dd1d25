"""MkDocs hook: render the ``>>>`` examples of docstrings as Python console code blocks.

The package's docstrings use the Sphinx field style with plain doctest examples (``>>> ...`` lines
followed by their output), which pytest runs with ``--doctest-modules``. Markdown would read such an
example as a paragraph (and ``info["goal"][0]`` as a reference link); this hook adds a Markdown
preprocessor that fences every doctest block as ``pycon`` before the other extensions see it, in
docstrings rendered by mkdocstrings and in the pages alike.
"""

from __future__ import annotations

import re

from markdown import Markdown
from markdown.extensions import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


class DoctestFences(Preprocessor):
    """Wraps each run of doctest lines (``>>>`` up to the next blank line) in a ``pycon`` fence."""

    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        fence: str | None = None  # the marker of the fenced block we are inside, if any
        in_doctest = False
        for line in lines:
            match = FENCE.match(line)
            if in_doctest and not line.strip():
                out.append("```")
                in_doctest = False
            if fence is None and not in_doctest and match:
                fence = match.group(1)
            elif fence is not None and line.strip().startswith(fence):
                fence = None
            elif fence is None and not in_doctest and line.lstrip().startswith(">>>"):
                indent = line[: len(line) - len(line.lstrip())]
                out += ["", f"{indent}```pycon"]
                in_doctest = True
            out.append(line)
        if in_doctest:
            out.append("```")
        return out


ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`(~?)([\w.]+)`")


class SphinxRoles(Preprocessor):
    """Turns Sphinx cross-reference roles (``:class:`~promptrl.x.Y```) into autorefs links, so a
    reference to a public ``promptrl`` object is a link (and a broken one fails ``mkdocs build --strict``);
    a role naming anything else becomes inline code."""

    @staticmethod
    def _link(match: re.Match[str]) -> str:
        short, target = match.group(1) == "~", match.group(2)
        shown = target.rsplit(".", 1)[-1] if short else target
        public = target.startswith("promptrl.") and not any(part.startswith("_") for part in target.split("."))
        return f"[`{shown}`][{target}]" if public else f"`{shown}`"

    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        fence: str | None = None
        for line in lines:
            match = FENCE.match(line)
            if fence is None and match:
                fence = match.group(1)
            elif fence is not None and line.strip().startswith(fence):
                fence = None
            out.append(line if fence is not None else ROLE.sub(self._link, line))
        return out


class DoctestFencesExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:
        # after whitespace normalization (30), before the fenced-code preprocessors (25)
        md.preprocessors.register(DoctestFences(md), "doctest_fences", 28)
        md.preprocessors.register(SphinxRoles(md), "sphinx_roles", 27)


@event_priority(100)  # before mkdocstrings copies the Markdown extensions for its docstrings
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    config.markdown_extensions.append(DoctestFencesExtension())
    return config
