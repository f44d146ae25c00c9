"""Training metrics written to a CSV file, one row per logged step.

A CSV is the simplest durable record of a run: it survives a crash (each row is flushed), opens
in any spreadsheet, and ``read_metrics`` turns it back into columns for plotting. Appending to
an existing file continues a resumed run instead of overwriting it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path


class MetricsLogger:
    """Append rows such as ``{"step": 10, "train_loss": 2.3}`` to a CSV file.

    The header is the union of the columns seen so far: a row with a new column (an evaluation
    metric logged only every few steps, say) rewrites the file once with the wider header.
    """

    def __init__(self, path: str | Path, append: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._columns: list[str] | None = None
        if append and self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                self._columns = next(csv.reader(f))
        elif not append or not self.path.exists():
            self.path.write_text("")

    def log(self, row: Mapping[str, float | int | str]) -> None:
        """Write one row; missing columns are left empty."""
        if self._columns is None:
            self._columns = list(row)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self._columns)
        new = [key for key in row if key not in self._columns]
        if new:
            self._widen(new)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._columns).writerow(dict(row))

    def _widen(self, new: list[str]) -> None:
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        self._columns = [*self._columns, *new]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)


def read_metrics(path: str | Path) -> dict[str, list[float]]:
    """Read a metrics CSV back as ``{column: values}`` (empty cells become NaN)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path}")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(
                float(value) if value not in ("", None) else math.nan
            )
    return columns
