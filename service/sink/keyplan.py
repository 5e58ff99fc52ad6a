"""Which key feeds each mapped column, planned once per distinct key tuple (pure).

"First present wins" depends only on which of the mapping's names a line holds, unless a
dotted name may match inside a nested object or a pop decided by a value (a time that
parses, a ``severity_number`` override) changes what a later column sees; such key tuples
get ``FALLBACK`` and their lines take the specification's per-line path.
"""

from __future__ import annotations

from typing import Any

from service.sink.rules import GROUPS, PLAN_SLOTS, SEVERITY_NUMBER, TIME, FieldMapping

# A key no JSON object can hold (not a str): ``dict.pop(obj, ABSENT, None)`` is a no-op.
ABSENT: Any = object()

# For one key tuple: the key each of ``PLAN_SLOTS`` takes (``ABSENT`` if none), in pop order.
KeyPlan = tuple[Any, ...]
SLOT: dict[str, int] = {name: i for i, name in enumerate(PLAN_SLOTS)}

# Distinct key tuples planned per flush before starting over (a plan is ~1 µs to make).
PLANS_KEPT = 1 << 16
FALLBACK: KeyPlan = (ABSENT,) * len(PLAN_SLOTS)


class KeyPlans(dict[tuple[str, ...], KeyPlan]):
    """Plans by key tuple, made on first sight; ``FALLBACK``: the line needs the per-line
    path (its pops are no-ops, then the caller maps it as the specification does)."""

    def __init__(self, mapping: FieldMapping) -> None:
        super().__init__()
        self.mapping = mapping
        self.fallbacks = 0
        self.by_relevant: dict[frozenset[str], KeyPlan] = {}
        self.groups = [mapping.names(g) for g in GROUPS if g != TIME]
        # Names whose presence the later groups look at: a time key among them would make
        # the later choice depend on whether the time parsed (and so was removed).
        self.looked_at = {SEVERITY_NUMBER}
        for names in self.groups:
            for name in names:
                self.looked_at.add(name)
                self.looked_at.add(name.partition(".")[0])
        self.relevant = self.looked_at.union(mapping.time)

    def __missing__(self, keys: tuple[str, ...]) -> KeyPlan:
        if len(self) >= PLANS_KEPT:  # lines with ever-new keys: bound the memory
            self.clear()
        # The plan only depends on which mapped names are present: lines whose other keys
        # vary share it (measured: planning every new key tuple cost 20 % on such input).
        relevant = frozenset(self.relevant.intersection(keys))
        plan = self.by_relevant.get(relevant)
        if plan is None:
            plan = self.by_relevant[relevant] = self._plan(keys) or FALLBACK
            self.fallbacks += plan is FALLBACK
        self[keys] = plan
        return plan

    def _plan(self, keys: tuple[str, ...]) -> KeyPlan | None:
        present = set(keys)
        time = next((n for n in self.mapping.time if n in present), ABSENT)
        if time in self.looked_at:
            return None
        chosen: list[Any] = [time]
        for slot in PLAN_SLOTS[1:]:
            if slot == SEVERITY_NUMBER:  # read after the severity pop, before the rest
                if SEVERITY_NUMBER in present and any(
                    SEVERITY_NUMBER in (n, n.partition(".")[0])
                    for g in PLAN_SLOTS[PLAN_SLOTS.index(slot) + 1 :]
                    for n in self.mapping.names(g)
                ):
                    return None  # whether the override pops it depends on the value
                chosen.append(SEVERITY_NUMBER if SEVERITY_NUMBER in present else ABSENT)
                continue
            pick: Any = ABSENT
            for name in self.mapping.names(slot):
                if name in present:
                    pick = name
                    break
                if "." in name and name.partition(".")[0] in present:
                    return None  # a nested match depends on the value
            present.discard(pick)
            chosen.append(pick)
        return tuple(chosen)
