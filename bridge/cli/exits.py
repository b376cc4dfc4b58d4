"""The exit codes of every subcommand."""

EXIT_OK = 0
EXIT_FAIL = 1  # the step did not succeed: refused, aborted, a check that failed
EXIT_INVALID = 2  # the configuration (or the wizard's answers) cannot be used
