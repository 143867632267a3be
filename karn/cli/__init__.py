"""karn's command line. Its first import puts karn's bytecode finder in place
(karn/cli/bytecode.py): every karn module a command imports after it loads faster."""

from karn.cli import bytecode

bytecode.install()
