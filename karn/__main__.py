try:
    from karn.cli.interrupt import quiet_interrupts
except KeyboardInterrupt:  # Ctrl-C before even the hook's module was imported
    raise SystemExit(130) from None

quiet_interrupts()  # Ctrl-C while karn is still starting: exit 130, no traceback
from karn.cli.main import main  # noqa: E402

raise SystemExit(main())
