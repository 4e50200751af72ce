"""The README's code blocks, for the tests that run them as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def readme_blocks(language: str = "sh") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def readme_block(first_line: str, language: str = "sh") -> str:
    """The one README block of ``language`` whose first line starts with ``first_line``."""
    (block,) = [b for b in readme_blocks(language) if b.startswith(first_line)]
    return block
