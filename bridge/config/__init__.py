"""Configuration: the model, loading from TOML, and the rules for each field.

`model` holds the frozen dataclasses everything downstream reads; `fields` checks one raw
value at a time (the `init` wizard asks with the same rules) and `credentials` the sign-in
keys (secrets, certificate and key, CA bundles, scope); `load` reads the file and collects
every problem into one `ConfigError`. May import: `bridge.errors`, `bridge.util`.
"""
