"""Subcommands of the ``sam-explain`` command line (see ``sam_explain.cli``)."""
