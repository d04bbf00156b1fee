"""The `mqtt` radio transport: join the mesh through a broker, as Meshtastic's own gateways do.

crypto.py holds the firmware's channel (AES-CTR) and PKI (X25519 + AES-CCM) packet crypto, codec.py turns
ServiceEnvelopes into `Inbound` and texts into envelopes, state.py the bounded per-node tables, and
transport.py the `Radio` itself over paho-mqtt.
"""
