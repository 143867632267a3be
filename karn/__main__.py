import gc

# Start-up makes no garbage cycles worth collecting, yet a collection would walk the
# objects of every module imported so far (~1 ms): karn turns the collector back on
# once a run's guest is built or a command is parsed (karn/cli/main.py).
gc.disable()
try:
    from karn.cli.entry import main
except KeyboardInterrupt:  # Ctrl-C before even the hook's module was imported
    raise SystemExit(130) from None

raise SystemExit(main())
