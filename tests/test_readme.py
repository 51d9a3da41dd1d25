"""The README's Python examples run as written: every ```python block of README.md, in order, in one
namespace (later blocks use what earlier ones defined), with no datasets made beforehand (an empty
MINARI_DATASETS_PATH) and ``hub_models/<suite>`` resolving to the shipped models as at the repository
root. The blocks run in a folder of their own holding a link to the repository's ``hub_models/``, so
files they save (``save_pretrained("my-pd")``, say) stay out of the checkout."""

import re
import signal
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIME_LIMIT_S = 120
"""All blocks together: the Quickstart is meant to run in well under a minute on a CPU."""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line of the block's first code line, code)`` of every ```python fenced block of ``text``."""
    blocks = []
    for match in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, re.M | re.S):
        first_line = text.count("\n", 0, match.start(1)) + 1
        blocks.append((first_line, match.group(1)))
    return blocks


def test_python_blocks_are_found():
    text = "intro\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a + 1\nprint(b)\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (9, "b = a + 1\nprint(b)\n")]


class _OutOfTime(Exception):
    pass


def _alarm(signum, frame):
    raise _OutOfTime


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python blocks"
    (tmp_path / "hub_models").symlink_to(ROOT / "hub_models", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    timed = hasattr(signal, "SIGALRM")  # no time limit where the platform has no alarm signal
    if timed:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(TIME_LIMIT_S)
    try:
        for number, (line, code) in enumerate(blocks, 1):
            where = f"README.md python block {number} of {len(blocks)} (line {line})"
            # padded so that tracebacks give README.md's own line numbers
            compiled = compile("\n" * (line - 1) + code, str(ROOT / "README.md"), "exec")
            failure = None
            try:
                exec(compiled, namespace)
            except _OutOfTime:
                failure = f"{where} was still running after {TIME_LIMIT_S} s for all blocks together"
            except Exception:
                failure = f"{where} failed:\n{code}\n{traceback.format_exc()}"
            if failure is not None:
                pytest.fail(failure, pytrace=False)
    finally:
        if timed:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
