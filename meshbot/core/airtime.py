"""LoRa time on air (Semtech AN1200.13), per Meshtastic modem preset. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

# mesh-facts "Air time": Meshtastic sends a 16-symbol preamble with CRC on and an explicit header.
PREAMBLE_SYMBOLS = 16
# Low-data-rate optimisation is on when a symbol lasts longer than this (RadioLibInterface).
LDRO_SYMBOL_MS = 16.0


@dataclass(frozen=True)
class ModemPreset:
    """Spreading factor, bandwidth in kHz and coding-rate denominator (4/cr) of a modem preset."""

    name: str
    sf: int
    bw_khz: float
    cr: int

    @property
    def symbol_ms(self) -> float:
        """Duration of one symbol in milliseconds."""
        return (1 << self.sf) / self.bw_khz  # 2**sf chips per symbol


# Config.LoRaConfig.ModemPreset values (firmware RadioInterface.cpp modemPresetToParams).
PRESETS: dict[str, ModemPreset] = {
    p.name: p
    for p in (
        ModemPreset("SHORT_TURBO", 7, 500.0, 5),
        ModemPreset("SHORT_FAST", 7, 250.0, 5),
        ModemPreset("SHORT_SLOW", 8, 250.0, 5),
        ModemPreset("MEDIUM_FAST", 9, 250.0, 5),
        ModemPreset("MEDIUM_SLOW", 10, 250.0, 5),
        ModemPreset("LONG_FAST", 11, 250.0, 5),
        ModemPreset("LONG_MODERATE", 11, 125.0, 8),
        ModemPreset("LONG_SLOW", 12, 125.0, 8),
        ModemPreset("LONG_TURBO", 11, 500.0, 8),
        ModemPreset("LITE_FAST", 9, 125.0, 5),
        ModemPreset("LITE_SLOW", 10, 125.0, 5),
        ModemPreset("NARROW_FAST", 7, 62.5, 6),
        ModemPreset("NARROW_SLOW", 8, 62.5, 6),
        ModemPreset("VERY_LONG_SLOW", 12, 62.5, 8),  # gone from firmware HEAD, kept for older nodes
    )
}


# An unknown preset is costed as the slowest one we know, so pacing errs on the polite side.
SLOWEST_PRESET = "VERY_LONG_SLOW"


def preset(name: str) -> ModemPreset:
    """Look up a modem preset by its firmware name; unknown names are costed as the slowest."""
    return PRESETS.get(name.upper(), PRESETS[SLOWEST_PRESET])


def time_on_air_s(frame_len: int, modem: ModemPreset) -> float:
    """Seconds on air of a LoRa frame of `frame_len` bytes (header, CRC on, explicit header)."""
    t_sym = modem.symbol_ms
    de = 1 if t_sym > LDRO_SYMBOL_MS else 0
    numerator = 8 * frame_len - 4 * modem.sf + 28 + 16
    payload_symbols = 8 + max(math.ceil(numerator / (4 * (modem.sf - 2 * de))) * modem.cr, 0)
    preamble_ms = (PREAMBLE_SYMBOLS + 4.25) * t_sym
    return (preamble_ms + payload_symbols * t_sym) / 1000.0
