"""meshbot: an offline AI relay bot for Meshtastic LoRa mesh networks."""

__version__ = "0.1.0"
