"""A braille-dot canvas: each terminal cell holds a 2x4 grid of dots, so a chart gets
twice the columns and four times the rows of the text it occupies."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

# Dot bits of U+2800 braille, indexed [dx][dy] within a cell (dy 0 at the top).
_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


class BrailleCanvas:
    def __init__(self, cols: int, rows: int) -> None:
        self.cols = max(0, cols)
        self.rows = max(0, rows)
        self.width = 2 * self.cols  # in dots
        self.height = 4 * self.rows
        self._mask: dict[tuple[int, int], int] = {}
        self._style: dict[tuple[int, int], str] = {}

    def dot(self, x: int, y: int, style: str) -> None:
        """Set dot (x, y), y=0 at the top; the last style drawn in a cell wins."""
        if not (0 <= x < self.width and 0 <= y < self.height):
            return
        cell = (x // 2, y // 4)
        self._mask[cell] = self._mask.get(cell, 0) | _BITS[x % 2][y % 4]
        self._style[cell] = style

    def line(self, x0: int, y0: int, x1: int, y1: int, style: str) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.dot(x0, y0, style)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def hline(self, y: int, style: str, dash: int = 0) -> None:
        """A horizontal line; `dash` > 0 draws `dash` dots on, `dash` off."""
        for x in range(self.width):
            if dash <= 0 or (x // dash) % 2 == 0:
                self.dot(x, y, style)

    def lines(self) -> list[Text]:
        out = []
        for r in range(self.rows):
            text = Text()
            for c in range(self.cols):
                mask = self._mask.get((c, r))
                if mask is None:
                    text.append(" ")
                else:
                    text.append(chr(0x2800 + mask), Style.parse(self._style[(c, r)]))
            out.append(text)
        return out
