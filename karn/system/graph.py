"""`karn system graph`: the description as a Graphviz drawing (partitions with their
ports, channels, diodes and guards), rendered to SVG by `dot`."""

from __future__ import annotations

import shutil
import subprocess

from karn.errors import KarnError
from karn.system.description import SystemDescription

NL = "\\n"  # a line break inside a Graphviz label


def _q(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'  # labels keep their \\n line breaks


def to_dot(system: SystemDescription) -> str:
    lines = [f"digraph {_q(system.name)} {{", "  rankdir=LR;", "  compound=true;",
             '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];',
             f"  label={_q(f'{system.name} ({system.schedule.policy} schedule)')};"]
    for part in system.partitions.values():
        lines.append(f"  subgraph {_q('cluster_' + part.name)} {{")
        extra = f"{NL}priority {part.priority}" if system.schedule.policy == "priority" else ""
        lines.append(f"    label={_q(part.name + extra)}; style=rounded;")
        lines.append(f"    {_q(part.name + '.program')} [shape=box, style=filled, "
                     f"fillcolor=lightgrey, label={_q(part.program.rsplit('/', 1)[-1])}];")
        for port in part.ports.values():
            detail = ""
            if port.direction == "in" and port.kind == "queuing":
                detail = f", depth {port.depth}"
            elif port.direction == "in" and port.refresh_ms:
                detail = f", refresh {port.refresh_ms:g}ms"
            shape = "rarrow" if port.direction == "out" else "larrow"
            label = _q(f"{port.name}{NL}{port.kind}, {port.max_size} B{detail}")
            lines.append(f"    {_q(port.ref)} [shape={shape}, label={label}];")
        lines.append("  }")
    for i, ch in enumerate(system.channels):
        style = 'color=red, penwidth=2.5, label="diode", arrowhead=normal' if ch.diode else ""
        if ch.guard is None:
            lines.append(f"  {_q(ch.source.ref)} -> {_q(ch.dest.ref)} [{style}];")
            continue
        g = ch.guard
        checks = [c for c, on in (("max size", g.max_size is not None), ("schema", g.schema),
                                  ("allow", g.allow), ("deny", g.deny), ("rate", g.rate)) if on]
        node = f"guard{i}"
        label = _q(f"guard {g.name}{NL}" + ", ".join(checks))
        lines.append(f"  {node} [shape=octagon, style=filled, fillcolor=gold, label={label}];")
        lines.append(f"  {_q(ch.source.ref)} -> {node};")
        lines.append(f"  {node} -> {_q(ch.dest.ref)} [{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(system: SystemDescription, out: str) -> None:
    dot = shutil.which("dot")
    if dot is None:
        raise KarnError("graphviz 'dot' not found (apt-get install graphviz)")
    proc = subprocess.run([dot, "-Tsvg", "-o", out], input=to_dot(system).encode(),
                          capture_output=True)
    if proc.returncode != 0:
        raise KarnError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
