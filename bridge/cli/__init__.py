"""The command line: `main` parses the arguments and dispatches, one module per
subcommand. May import anything; nothing else imports it.
"""
