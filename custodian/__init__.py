"""The thin application shell: the ``custodian`` CLI."""
