"""Code for guests, not for the monitor: karn_port.h, a C header with which a partition's
program maps its ports' rings (docs/design/channels.md, "Mapped ports"). Compile with
`-I "$(python3 -c 'import karn.guest as g; print(g.INCLUDE)')"`."""

from pathlib import Path

INCLUDE = str(Path(__file__).resolve().parent)
