"""Which key feeds each mapped column, planned once per distinct key tuple (pure).

"First present wins" depends only on which of the mapping's names a line holds, unless a
dotted name may match inside a nested object (ECS sends ``{"host": {"name": ...}}``, most
agents a string ``host``; both are common). Such a slot gets a ``NestedPick``: the names
from that dotted one through the first name the line surely holds, which
``rules.pop_first`` decides per line, in slot order; a later slot that reaches a key the
pick may have taken or changed gets one too. Only when a time or ``severity_number`` pop
(decided by a value: a time that parses, an override that fits) changes what a later
column sees does the key tuple get ``FALLBACK``: its lines take the specification's
per-line path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.sink.rules import GROUPS, PLAN_SLOTS, SEVERITY_NUMBER, TIME, FieldMapping, pop_first

# A key no JSON object can hold (not a str): ``dict.pop(obj, ABSENT, None)`` is a no-op.
ABSENT: Any = object()

# For one key tuple: the key each of ``PLAN_SLOTS`` takes (``ABSENT`` if none), in pop order.
KeyPlan = tuple[Any, ...]
SLOT: dict[str, int] = {name: i for i, name in enumerate(PLAN_SLOTS)}

# Distinct key tuples planned per flush before starting over (a plan is ~1 µs to make).
PLANS_KEPT = 1 << 16
FALLBACK: KeyPlan = (ABSENT,) * len(PLAN_SLOTS)


@dataclass(frozen=True, slots=True)
class NestedPick:
    """A slot whose key depends on a value: ``rules.pop_first`` over ``names`` decides it
    per line. Never a key of a JSON object, so ``dict.pop(obj, pick, None)`` is a no-op."""

    names: tuple[str, ...]
    # The keys the pick may take or change (the plain names held, the heads of dotted ones).
    touches: frozenset[str]


def pop_nested(objs: Sequence[dict[str, Any]], keys: Sequence[Any], values: list[Any]) -> None:
    """Put into ``values`` the value each ``NestedPick`` row of ``keys`` takes, popped from
    its line as ``rules.pop_first`` does (a per-line loop, over those rows only)."""
    for row in [i for i, key in enumerate(keys) if type(key) is NestedPick]:
        values[row] = pop_first(objs[row], keys[row].names)


class KeyPlans(dict[tuple[str, ...], KeyPlan]):
    """Plans by key tuple, made on first sight; ``FALLBACK``: the line needs the per-line
    path (its pops are no-ops, then the caller maps it as the specification does)."""

    def __init__(self, mapping: FieldMapping) -> None:
        super().__init__()
        self.mapping = mapping
        self.fallbacks = 0
        # Slots some plan gave a NestedPick (only those columns look for one).
        self.nested: set[str] = set()
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
        unsure: set[str] = set()  # keys a NestedPick may or may not have taken or changed
        for slot in PLAN_SLOTS[1:]:
            if slot == SEVERITY_NUMBER:  # read after the severity pop, before the rest
                if SEVERITY_NUMBER in unsure or (
                    SEVERITY_NUMBER in present
                    and any(
                        SEVERITY_NUMBER in (n, n.partition(".")[0])
                        for g in PLAN_SLOTS[PLAN_SLOTS.index(slot) + 1 :]
                        for n in self.mapping.names(g)
                    )
                ):
                    return None  # whether the override pops it depends on the value
                chosen.append(SEVERITY_NUMBER if SEVERITY_NUMBER in present else ABSENT)
                continue
            pick = self._pick(self.mapping.names(slot), present, unsure)
            if isinstance(pick, NestedPick):
                unsure |= pick.touches
                self.nested.add(slot)
            else:
                present.discard(pick)
            chosen.append(pick)
        return tuple(chosen)

    @staticmethod
    def _pick(names: tuple[str, ...], present: set[str], unsure: set[str]) -> Any:
        """The key of one slot: a name held for sure, ``ABSENT``, or a ``NestedPick`` from
        the first name whose match depends on a value (a dotted name whose head is held, or
        a key an earlier ``NestedPick`` may have taken)."""
        for i, name in enumerate(names):
            head = name.partition(".")[0]
            if name in present and name not in unsure:
                return name
            if name in unsure or head in unsure or ("." in name and head in present):
                return _nested(names[i:], present, unsure)
        return ABSENT


def _nested(names: tuple[str, ...], present: set[str], unsure: set[str]) -> NestedPick:
    """``names`` through the first one held for sure: what ``rules.pop_first`` may take on
    this key set (the names before them are surely absent, so skipping them changes
    nothing), and the keys it may take or change."""
    taken: list[str] = []
    touches: set[str] = set()
    for name in names:
        head = name.partition(".")[0]
        taken.append(name)
        if name in present and name not in unsure:
            touches.add(name)
            break
        if name in present or name in unsure:
            touches.add(name)
        if "." in name and (head in present or head in unsure):
            touches.add(head)
    return NestedPick(tuple(taken), frozenset(touches))
