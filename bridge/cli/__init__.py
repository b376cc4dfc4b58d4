"""The command line: `main` parses the arguments, loads the configuration and dispatches;
one module per subcommand (`run`, `check`, `token`, `login`, `cert`, `init`), with
`configuration` (loading it for them), `exits` (their exit codes), `steps` and
`token_checks` (what `check` and `token` report) and `answers` (the wizard's checked
answers). May import anything; nothing else imports it.
"""
