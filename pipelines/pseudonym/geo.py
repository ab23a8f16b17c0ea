"""Geolocation generalisation: coordinates snapped to a grid, place names cut.

A coordinate becomes the centre of its grid cell, so every device in one cell
reports the same point. The longitude cell widens towards the poles so a cell
is never narrower than the configured size on the ground. Place names are read
as comma-separated from most to least specific ("Rack 4, 12 Main St,
Springfield, Illinois, US"), and only the last one (country) or two (region)
components are kept.
"""

from __future__ import annotations

import math

KM_PER_DEG = 111.32
MIN_GRID_KM = 1.0
_WORST_LAT = 85.0


def coarsen_lat(lat: float, grid_km: float) -> float:
    cell = grid_km / KM_PER_DEG
    lat = max(-90.0, min(90.0, float(lat)))
    return round(max(-90.0, min(90.0, (math.floor(lat / cell) + 0.5) * cell)), 4)


def coarsen_lon(lon: float, grid_km: float, lat: float | None) -> float:
    """Without the latitude, assume one near the pole: coarser, never finer."""
    ref = _WORST_LAT if lat is None else min(abs(float(lat)), _WORST_LAT)
    cell = min(360.0, grid_km / (KM_PER_DEG * math.cos(math.radians(ref))))
    lon = ((float(lon) + 180.0) % 360.0) - 180.0
    c = (math.floor((lon + 180.0) / cell) + 0.5) * cell - 180.0
    return round(max(-180.0, min(180.0, c)), 4)


def cut_place(name: str, level: str) -> str:
    parts = [p.strip() for p in name.split(",") if p.strip()]
    keep = 1 if level == "country" else 2
    return ", ".join(parts[-keep:])


def place(name: str, level: str) -> tuple[str | None, str]:
    """(what is kept, the level really kept) for a place text.

    Cutting only proves something when there was more to cut: "Room 3, Clinic of
    Dr Okafor, Ikeja, Lagos, NG" cut to region keeps "Lagos, NG", a region. A text
    with no more parts than the level keeps ("Dr Okafor's clinic") may be as
    precise as a room, so it is not kept (None: the caller tokenises it) and the
    level says so. A lone country code (two capitals) is a country."""
    parts = [p.strip() for p in name.split(",") if p.strip()]
    keep = 1 if level == "country" else 2
    if len(parts) > keep:
        return ", ".join(parts[-keep:]), level
    if len(parts) == 1 and len(parts[0]) == 2 and parts[0].isalpha() and parts[0].isupper():
        return parts[0], "country"
    return None, "token"
