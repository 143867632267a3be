"""karn's command line. Its first import puts karn's bytecode finder in place
(karn/cli/bytecode.py): every karn module a command imports after it loads faster."""

import os

from karn.cli import bytecode

bytecode.install(os.path.dirname(os.path.dirname(__file__)))
