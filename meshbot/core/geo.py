"""Distances and directions on the Earth between two latitude/longitude pairs, in degrees. Pure.

One copy for every place that says how far and which way: the node directory's commands and mesh facts,
and the emergency alert.
"""

from __future__ import annotations

import math

EARTH_RADIUS_M = 6_371_000.0
COMPASS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlon = phi2 - phi1, math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing from the first point to the second, degrees clockwise from north (0..360)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dlon = math.radians(lon2 - lon1)
    x = math.sin(dlon) * math.cos(phi2)
    y = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlon)
    return math.degrees(math.atan2(x, y)) % 360.0


def compass(degrees: float) -> str:
    """The nearest of the eight compass points."""
    return COMPASS[int((degrees % 360) / 45 + 0.5) % 8]
