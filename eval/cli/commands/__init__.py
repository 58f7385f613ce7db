"""One module per ``tdbn-zoo`` subcommand. Each defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; ``eval.cli`` lists them in ``COMMANDS``."""
