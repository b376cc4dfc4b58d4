"""MQTT: the paho client wrapper, the topic tree, Home Assistant discovery payloads (pure
builders), and the other bridges on the base topic. May import: `bridge.config`,
`bridge.util`.
"""
