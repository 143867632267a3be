try:
    from karn.cli.entry import main
except KeyboardInterrupt:  # Ctrl-C before even the hook's module was imported
    raise SystemExit(130) from None

raise SystemExit(main())
