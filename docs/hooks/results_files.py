"""MkDocs hook: publish the figures under ``results/`` with the site.

The measured tables are included into the pages with ``pymdownx.snippets``; their figures (PNG files
written by ``promptrl ablate``) stay in ``results/`` and are added to the site as
``results/<path>.png`` at the site's root, so a page at the root of ``docs/`` links them as
``results/ablations/<name>.png`` without a copy under ``docs/`` (the link resolves on the built site,
not when the page's source is read on its own).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = Path(config.config_file_path).parent
    for png in sorted((root / "results").rglob("*.png")):
        uri = png.relative_to(root).as_posix()
        files.append(
            File(uri, src_dir=str(root), dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls)
        )
    return files
