"""The ``musiclm`` command line."""
