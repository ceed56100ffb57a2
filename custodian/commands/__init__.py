"""Sub-commands of the ``custodian`` CLI, one module per group of commands."""
