"""Settings given per resolution (PGGAN widths, batch sizes, learning rates) at any image size.

A preset lists values for the resolutions it was tuned at; a dataset of another size needs
values at resolutions the preset never named. Such a value follows the official rule for that
setting (Karras et al. 2018: widths ``min(fmap_base / 2**stage, fmap_max)``, batch sizes
halving per doubling above 32 px), scaled by how far the preset departs from the rule at the
nearest resolution it lists (the largest one below, else the smallest one above). So a preset
that runs at a quarter of the official widths keeps a quarter at every size, and a constant
(the learning rate, whose official rule is flat) stays the nearest listed value.
"""

from __future__ import annotations

from typing import Callable, Mapping


def nearest_listed(res: int, listed: list[int]) -> int:
    """The listed resolution a missing ``res`` is scaled from: the largest below, else the smallest above."""
    lower = [r for r in listed if r <= res]
    return max(lower) if lower else min(listed)


def expand(given: Mapping[int, float], resolutions: list[int], rule: Callable[[int], float]) -> dict[int, float]:
    """``given`` at every one of ``resolutions``; an unlisted one is ``rule`` scaled to the nearest listed.

    Parameters
    ----------
    given : mapping
        Resolution (px) -> value, as the config lists it (keys may be strings from JSON).
    resolutions : list of int
        Resolutions that need a value.
    rule : callable
        The official value at a resolution (positive).

    Returns
    -------
    dict
        ``{res: value}`` for every resolution; unrounded where scaled (callers round).
    """
    table = {int(k): v for k, v in given.items()}
    listed = sorted(table)
    out = {}
    for res in resolutions:
        if res in table:
            out[res] = table[res]
        else:
            ref = nearest_listed(res, listed)
            out[res] = table[ref] * rule(res) / rule(ref)
    return out
