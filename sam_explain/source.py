"""The package's own code, listed at run time: ``show_source(MaskDecoder.predict_masks, lines=...)``.

The walkthrough shows the code it teaches from the installed package, so a listing cannot drift
from what runs. In Jupyter a listing is highlighted HTML with inline styles (it survives the static
HTML export); elsewhere it prints as text with line numbers.
"""

from __future__ import annotations

import html
import inspect
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

Lines = Union[None, Tuple[int, int], Tuple[str, str]]


@dataclass
class Source:
    """Some lines of a file of the package: ``text`` (the lines, dedented), the file and the line number
    of the first, the lines to highlight (numbers in the file)."""

    text: str
    path: str
    first_line: int
    highlight: Tuple[int, ...] = ()
    title: str = ""

    @property
    def lines(self) -> Sequence[str]:
        return self.text.splitlines()

    def __str__(self) -> str:
        width = len(str(self.first_line + len(self.lines)))
        marks = set(self.highlight)
        rows = [f"{'>' if self.first_line + i in marks else ' '}{self.first_line + i:>{width}}  {line}"
                for i, line in enumerate(self.lines)]
        return "\n".join([f"# {self.title}"] + rows)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        formatter = HtmlFormatter(noclasses=True, linenos="inline", linenostart=self.first_line, style="default",
                                  hl_lines=[n - self.first_line + 1 for n in self.highlight], wrapcode=True)
        body = highlight(self.text, PythonLexer(), formatter)
        return (f'<div style="font-size:12px"><div style="color:#555;font-family:monospace;margin-bottom:2px">'
                f"{html.escape(self.title)}</div>{body}</div>")


def _span(code: Sequence[str], lines: Lines, where: str) -> Tuple[int, int]:
    """(first, last), 0-based and inclusive, of the lines asked for within ``code``."""
    if lines is None:
        return 0, len(code) - 1
    if len(lines) != 2:
        raise ValueError(f"show_source: lines must be (first, last) numbers or (start text, end text), got {lines!r}")
    a, b = lines
    if isinstance(a, int) and isinstance(b, int):
        if not 1 <= a <= b <= len(code):
            raise ValueError(f"show_source: lines must be within 1..{len(code)} of {where}, got {lines!r}")
        return a - 1, b - 1
    if isinstance(a, str) and isinstance(b, str):
        start = next((i for i, line in enumerate(code) if a in line), None)
        if start is None:
            raise ValueError(f"show_source: no line of {where} contains {a!r}")
        end = next((i for i in range(start, len(code)) if b in code[i]), None)
        if end is None:
            raise ValueError(f"show_source: no line of {where} after {a!r} contains {b!r}")
        return start, end
    raise ValueError(f"show_source: lines must be (first, last) numbers or (start text, end text), got {lines!r}")


def show_source(obj: Callable, lines: Lines = None, *, highlight: Sequence[str] = (), title: Optional[str] = None
                ) -> Source:
    """The source of ``obj`` (a function, method or class of the package), or of some of its lines.

    ``lines``: (first, last) line numbers counted from the ``def`` (1), or (start text, end text): from
    the first line containing the one through the next line containing the other, so that a listing
    follows the code when lines move. ``highlight``: texts whose lines are highlighted. Returns a
    ``Source`` that shows itself as highlighted HTML in Jupyter and as numbered text elsewhere.
    Raises ValueError when the lines asked for are not there."""
    try:
        code, start = inspect.getsourcelines(obj)
        path = inspect.getsourcefile(obj) or "?"
    except (TypeError, OSError) as err:
        raise ValueError(f"show_source: no source for {obj!r} ({err})") from None
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
    where = f"{name}"
    first, last = _span([line.rstrip("\n") for line in code], lines, where)
    chosen = code[first : last + 1]
    indent = min((len(line) - len(line.lstrip()) for line in chosen if line.strip()), default=0)
    text = "".join(line[indent:] if line.strip() else "\n" for line in chosen).rstrip("\n")
    first_line = start + first
    marks = tuple(first_line + i for i, line in enumerate(chosen) if any(h in line for h in highlight))
    module = getattr(obj, "__module__", "") or ""
    title = title or f"{module}.{name}, lines {first_line}-{first_line + len(chosen) - 1} of {module.replace('.', '/')}.py"
    return Source(text=text, path=path, first_line=first_line, highlight=marks, title=title)
