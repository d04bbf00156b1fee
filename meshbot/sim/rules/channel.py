"""The simulated LoRa channel's pure rules: link quality, contention windows, retransmission delay.

Firmware facts (RadioInterface.h/.cpp, 2.7.x and HEAD), read for the numbers, not copied:
- slot time = 2.5 symbols (CAD) + 7.6 ms of CAD, propagation, turnaround and MAC overhead;
- CWmin = 3, CWmax = 8; Arduino ``map`` (integer arithmetic) picks a window size;
- a node's own packet waits ``random(0, 2^CW) * slot``, CW from channel utilisation;
- a relay waits by the SNR it heard the packet at: a ROUTER ``random(0, 2*CW) * slot``, anyone else
  ``2*CWmax*slot + random(0, 2^CW) * slot`` (CW from SNR in -20..10 dB), so far-away nodes and
  routers relay first;
- a want_ack packet is retried after ``2*airtime + (2^CW + 2*CWmax + 2^((CWmax+CWmin)/2))*slot +
  4.5 s`` of processing time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from meshbot.core import limits
from meshbot.core.airtime import ModemPreset

CW_MIN = 3
CW_MAX = 8
SNR_MIN_DB = -20
SNR_MAX_DB = 10
CAD_SYMBOLS = 2.5  # max(2.25, NUM_SYM_CAD + 0.5) with NUM_SYM_CAD = 2
SLOT_OVERHEAD_MS = 0.2 + 0.4 + 7.0  # CAD processing, propagation, turnaround + MAC
PROCESSING_TIME_S = limits.RETRANSMIT_PROCESSING_S  # RadioInterface.h PROCESSING_TIME_MSEC

# A link's quality when the topology gives positions but no numbers: a log-distance path loss at
# 915 MHz (free space at 1 km is 91.7 dB, plus about 8 dB of urban clutter) with an urban exponent
# of 3, a 20 dBm transmitter, and a noise floor well above the thermal -114 dBm of a 250 kHz
# channel, as ISM-band interference in a city makes it. LoRa SNR reports saturate near +12 dB.
TX_POWER_DBM = 20.0
PATH_LOSS_1KM_DB = 100.0
PATH_LOSS_EXPONENT = 3.0
NOISE_FLOOR_DBM = -100.0
SNR_CEILING_DB = 12.0
MIN_DISTANCE_KM = 0.01
DEFAULT_SNR_DB = 6.0
DEFAULT_RSSI_DBM = -80


@dataclass(frozen=True)
class Link:
    """One direction of a link: how likely a frame is lost, and how it is heard."""

    loss: float = 0.0
    snr: float = DEFAULT_SNR_DB
    rssi: int = DEFAULT_RSSI_DBM


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (lat, lon) points in kilometres."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))


def link_from_distance(km: float, loss: float = 0.0) -> Link:
    """A link whose RSSI and SNR follow from the distance between its ends."""
    path_loss = PATH_LOSS_1KM_DB + 10 * PATH_LOSS_EXPONENT * math.log10(max(km, MIN_DISTANCE_KM))
    rssi = TX_POWER_DBM - path_loss
    snr = min(rssi - NOISE_FLOOR_DBM, SNR_CEILING_DB)
    return Link(loss=loss, snr=round(snr, 2), rssi=int(round(rssi)))


def arduino_map(value: float, in_min: int, in_max: int, out_min: int, out_max: int) -> int:
    """Arduino's ``map`` on longs: the value is truncated, and division truncates toward zero."""
    numerator = (int(value) - in_min) * (out_max - out_min)
    span = in_max - in_min
    quotient = abs(numerator) // abs(span)
    if (numerator < 0) != (span < 0):
        quotient = -quotient
    return quotient + out_min


def slot_time_s(modem: ModemPreset) -> float:
    """RadioInterface::computeSlotTimeMsec for sub-GHz radios, in seconds."""
    return (CAD_SYMBOLS * modem.symbol_ms + SLOT_OVERHEAD_MS) / 1000.0


def cw_from_utilisation(percent: float) -> int:
    """Contention window exponent from channel utilisation (busier: wider)."""
    return arduino_map(percent, 0, 100, CW_MIN, CW_MAX)


def cw_from_snr(snr: float) -> int:
    """Contention window exponent from the SNR a packet was heard at (louder: wider, relays later)."""
    return arduino_map(snr, SNR_MIN_DB, SNR_MAX_DB, CW_MIN, CW_MAX)


def own_tx_delay_s(rng: random.Random, modem: ModemPreset, utilisation_percent: float) -> float:
    """getTxDelayMsec: the wait before a node sends its own packet."""
    return rng.randrange(0, 2 ** cw_from_utilisation(utilisation_percent)) * slot_time_s(modem)


def relay_tx_delay_s(rng: random.Random, modem: ModemPreset, snr: float, *, early: bool) -> float:
    """getTxDelayMsecWeighted: the wait before relaying someone else's packet."""
    cw = cw_from_snr(snr)
    slot = slot_time_s(modem)
    if early:  # ROUTER: a short window below everyone else's offset
        return rng.randrange(0, max(2 * cw, 1)) * slot
    return (2 * CW_MAX + rng.randrange(0, 2**cw)) * slot


def retransmission_delay_s(airtime_s: float, modem: ModemPreset, utilisation_percent: float = 0.0) -> float:
    """getRetransmissionMsec: how long a want_ack packet waits for its ACK before going again."""
    cw = cw_from_utilisation(utilisation_percent)
    slots = 2**cw + 2 * CW_MAX + 2 ** ((CW_MAX + CW_MIN) // 2)
    return 2 * airtime_s + slots * slot_time_s(modem) + PROCESSING_TIME_S


def response_hop_limit(hop_start: int, hop_limit: int, configured: int) -> int:
    """RoutingModule::getHopLimitForResponse: hops the request used plus a margin of 2, capped."""
    if hop_start != 0:
        used = configured if hop_start < hop_limit else hop_start - hop_limit
        if used > configured:
            return used
        if used + 2 < configured:
            return used + 2
    return configured
