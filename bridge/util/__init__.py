"""Small helpers shared across concerns, one place each: atomic file writes, time stamps,
reconnect backoff. Imports nothing of the bridge.
"""
