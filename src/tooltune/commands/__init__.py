"""One module per `tooltune` subcommand (see `tooltune.cli.COMMANDS`)."""
