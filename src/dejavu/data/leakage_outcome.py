"""What the leakage checks of a split found, in words: which check holds and which does not, and why a split
with a failing check went ahead. The split stage's rule (:func:`near_duplicates_block`), its console warning and
refusal, and the report all use this module, so that they say the same thing.

The input is split.json's ``leakage`` block: :func:`dejavu.data.leakage.leakage_checks`'s report plus what the split
stage adds (``allowed``, ``dataset``, ``near.blocking``, ``dropped_before_split``).
"""

from __future__ import annotations

from typing import Any, Mapping


# Datasets on which near-duplicates across sets are reported but do not refuse the split, and why. The split
# stage's rule, its console warning and the report's explanation all come from here, so they cannot drift apart.
NEAR_DUPLICATES_DO_NOT_BLOCK = {
    # The 64-bit hash keeps only a 32 x 32 grey thumbnail's 8 x 8 lowest frequencies, the coarse layout of light
    # and dark; different synthetic scenes of one class (one shape and colour at a similar place) share it.
    "scenes": "expected on the built-in scenes: different images of one class share the hash's coarse layout",
}
NEAR_DUPLICATES_DO_NOT_BLOCK["captioned_scenes"] = NEAR_DUPLICATES_DO_NOT_BLOCK["scenes"]
# What a failing check that refuses the split needs in order to go ahead anyway.
ALLOWED_REASON = (
    "split.allow_leakage = true: the gap may be biased, since a model may have trained on an image the audit "
    "treats as unseen"
)


def near_duplicates_block(dataset: str) -> bool:
    """Whether near-duplicates across sets refuse the split of ``dataset`` (every dataset but the built-in scenes)."""
    return dataset not in NEAR_DUPLICATES_DO_NOT_BLOCK


def _by_set_pair(by_groups: Mapping[str, int]) -> str:
    """``{"T&X": 112, "A&X": 11}`` -> ``"T↔X 112, A↔X 11"`` (most pairs first)."""
    items = sorted(by_groups.items(), key=lambda item: (-int(item[1]), item[0]))
    return ", ".join(f"{name.replace('&', '↔')} {int(count)}" for name, count in items)


def _pairs(count: int, by_groups: Mapping[str, int]) -> str:
    text = f"{count} pair{'s' if count != 1 else ''}"
    return f"{text} ({_by_set_pair(by_groups)})" if count else text


# How the headline names a failing check.
LABELS = {"ids": "ids", "exact": "exact duplicates", "near": "near-duplicates"}


def _check(name: str, statement: str, holds: bool | None, blocks: bool = True) -> dict[str, Any]:
    return {"name": name, "statement": statement, "holds": holds, "blocks": blocks, "reason": ""}


def leakage_outcome(leakage: Mapping[str, Any], disjoint: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Which leakage check holds and which does not, and why a split with a failing check went ahead.

    leakage: the ``leakage`` block of split.json (as ``leakage_checks`` plus the split stage's ``allowed``,
    ``dataset`` and ``near.blocking``; an older block lacks some: a missing ``blocking`` reads as True unless
    the block says the split passed with near pairs, which only the scenes rule allowed). disjoint: the split
    checks' ``pairwise_disjoint`` (ids shared by each pair of sets), or None to leave the id check out.
    Returns ``checks``: dicts of ``name`` (ids, exact, near), ``statement``, ``holds`` (None: not run),
    ``blocks`` (a failure refuses the split unless allowed) and ``reason`` (why a failing check did not stop
    the split, "" when nothing recorded allowed it); ``failed``: the names of the checks that do not hold;
    ``blocking``: those of them that refuse a split unless ``split.allow_leakage``; and a one-line ``headline``
    (the page writes "Leakage checks: " before it).

    Example:
        >>> leakage_outcome({"exact": {"pairs": 1, "by_groups": {"A&X": 1}}, "near": {"enabled": False}})["headline"]
        '1 of 1 does not hold (exact duplicates); near-duplicates were not checked'
    """
    exact, near = leakage.get("exact", {}), leakage.get("near", {})
    near_pairs = int(near.get("pairs", 0))
    blocking = bool(near.get("blocking", not (leakage.get("ok") and near_pairs and not exact.get("pairs"))))
    dataset = str(leakage.get("dataset") or ("scenes" if not blocking else ""))
    checks = []
    if disjoint is not None:
        shared = {pair: int(n) for pair, n in disjoint.items() if n}
        total = sum(shared.values())
        checks.append(_check("ids", f"ids: {total} images are in two sets ({_by_set_pair(shared)})" if total
                             else "ids: no image is in two sets", not total))
    hashed = "the pixels" if dataset in NEAR_DUPLICATES_DO_NOT_BLOCK else "the file"
    checks.append(_check("exact", f"exact duplicates across sets (SHA-256 of {hashed}): "
                         f"{_pairs(int(exact.get('pairs', 0)), exact.get('by_groups', {}))}", not exact.get("pairs")))
    if near.get("enabled", True):
        found = _pairs(near_pairs, near.get("by_groups", {}))
        checks.append(_check("near", f"near-duplicates across sets (perceptual hash, ≤ {near.get('max_distance')} "
                             f"of 64 bits differ): {found}", not near_pairs, blocking))
    else:
        checks.append(_check("near", "near-duplicates across sets: not checked (split.near_duplicate_distance "
                             "= -1)", None))
    for check in checks:
        if check["holds"] is False:
            exempt = NEAR_DUPLICATES_DO_NOT_BLOCK.get(dataset, "") if not check["blocks"] else ""
            check["reason"] = exempt or (ALLOWED_REASON if leakage.get("allowed") else "")
    failed = [c for c in checks if c["holds"] is False]
    ran = sum(c["holds"] is not None for c in checks)
    if failed:
        names = ", ".join(LABELS[c["name"]] for c in failed)
        headline = f"{len(failed)} of {ran} {'does' if len(failed) == 1 else 'do'} not hold ({names})"
    else:
        headline = f"all {ran} hold" if ran == len(checks) else f"the {ran} that ran hold"
    if ran < len(checks):
        headline += "; near-duplicates were not checked"
    return {"checks": checks, "failed": [c["name"] for c in failed],
            "blocking": [c["name"] for c in failed if c["blocks"]], "headline": headline}
