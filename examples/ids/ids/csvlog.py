"""1553 recordings as CSV, one transaction a line, with the ground-truth label:
time (s), bus, kind, the words in bus order as 4-digit hex, gap1, gap2, timeout, label."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import TextIO

from ids import mil1553 as m

FIELDS = ["time", "bus", "kind", "words", "gap1", "gap2", "timeout", "label"]


def write(out: TextIO, msgs: Iterable[m.Message]) -> None:
    w = csv.writer(out)
    w.writerow(FIELDS)
    for x in msgs:
        w.writerow([f"{x.time:.7f}", x.bus, x.kind, " ".join(f"{v:04x}" for v in x.words),
                    x.gap1, x.gap2, int(x.timeout), x.label])


def read(src: TextIO) -> Iterator[m.Message]:
    rows = csv.reader(src)
    if next(rows, None) != FIELDS:
        raise ValueError(f"not a 1553 CSV recording (header is not {','.join(FIELDS)})")
    for row in rows:
        t, bus, kind, words, gap1, gap2, timeout, label = row
        yield m.Message(float(t), bus, kind, [int(v, 16) for v in words.split()],
                        int(gap1), int(gap2), timeout == "1", label)
