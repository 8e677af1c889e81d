"""The `lws` command line: one command, one sub-command module per area."""
