"""Small helpers shared across concerns, one place each: atomic file writes, time stamps,
reconnect backoff, "did you mean" suggestions. Imports nothing of the bridge.
"""
