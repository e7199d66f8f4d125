"""What a resolution is: one outcome per possible answer, and the status they add up to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """One complete answer for a place. Fields are positional rows of the snapshot's layers."""

    county: int | None = None
    township: int | None = None
    grid: int | None = None
    park: int | None = None
    parks: tuple[int, ...] = ()  # every park covering the place, winner first
    sea: int | None = None
    bureau: int | None = None
    co_bureaus: tuple[int, ...] = ()  # co-handling bureaus of a cross-county case
    rules: tuple[tuple[str, str], ...] = ()  # (what, rule key), e.g. ("bureau", "park")
    reasons: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()

    @property
    def outside(self) -> bool:
        return self.county is None and self.sea is None and self.bureau is None

    def key(self) -> tuple:
        return (self.county, self.township, self.grid, self.park, self.sea, self.bureau)


@dataclass(frozen=True)
class Resolution:
    """All distinct outcomes for one location; more than one means 'ambiguous'."""

    outcomes: tuple[Outcome, ...]

    @property
    def status(self) -> str:
        if all(o.outside for o in self.outcomes):
            return "outside"
        return "ok" if len(self.outcomes) == 1 else "ambiguous"
