"""MQTT: the paho client wrapper, the topic tree, and Home Assistant discovery payloads
(pure builders). May import: `bridge.config`, `bridge.util`.
"""
