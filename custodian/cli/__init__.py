"""The command line: click commands only (options -> a stage or service -> echo).

:mod:`custodian.cli.main` holds the group, the one place where errors become exit
codes, and the audit-trail wrapper; each other module is one command (or group)
and imports no other command module.
"""
