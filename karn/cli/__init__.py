"""karn's command line. Its entry point (karn/cli/entry.py) puts karn's bytecode finder
in place (karn/cli/bytecode.py) before it imports the rest: every karn module a command
imports after it loads faster."""
