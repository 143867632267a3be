from karn.cli.interrupt import quiet_interrupts

quiet_interrupts()  # Ctrl-C while karn is still starting: exit 130, no traceback
from karn.cli.main import main  # noqa: E402

raise SystemExit(main())
