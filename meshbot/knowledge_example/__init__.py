"""The example knowledge folder: notes on using the bot, Meshtastic basics and a sample community.

Shipped inside the package (config/knowledge is a link here) so the demo and `meshbot eval` find it anywhere.
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
