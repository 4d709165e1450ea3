"""The ``stars`` command (``cli.main``): the entry point above every other package.

It sets the process up (``stars.environment``), routes the console (``stars.console``) and
hands each subcommand to the package that owns it; nothing imports it, so it can import
``pipeline``, ``serving`` and ``evaluation`` without a cycle."""
