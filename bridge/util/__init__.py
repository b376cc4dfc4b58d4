"""Small helpers shared across concerns, one place each: atomic file writes, time stamps,
reconnect backoff, "did you mean" suggestions, signals on a thread of their own. Imports
nothing of the bridge.
"""
