"""``netmon-collector`` subcommands, one module each (``register(subparsers)``)."""
