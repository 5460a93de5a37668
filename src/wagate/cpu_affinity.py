"""Which CPUs `wagate serve` runs on (`WAGATE_CPU_AFFINITY`).

One wagate process does its Python work one thread at a time (the GIL), yet its event loop and
its store thread hand every store operation to each other. When those threads sit on different
CPUs, each hand-off wakes an idle CPU (on a VM, an interrupt between virtual CPUs) and the GIL
travels between them: on the 2-core VMs of docs/benchmarks.md ("One CPU for the server") a trip
to the store thread and back cost ~160 µs of CPU unpinned against ~70 µs pinned, and P2's
latency halved. So a SQLite server, which is the one process on its machine, keeps to one CPU
unless told otherwise. PostgreSQL nodes are not pinned by default: several may share a machine,
and `auto` would put them all on the same CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

logger = logging.getLogger(__name__)

AUTO: Final = "auto"
OFF: Final = "off"
CpuAffinity = frozenset[int] | Literal["auto", "off"]


class AffinityError(ValueError):
    """The setting names CPUs this process cannot run on, or the platform cannot pin."""


def parse_cpu_affinity(raw: str) -> CpuAffinity:
    """`auto`, `off`, or a CPU list as in taskset(1): `1`, `0,2`, `2-3`, `0,4-5`."""
    value = raw.strip().lower()
    if value in (AUTO, OFF):
        return AUTO if value == AUTO else OFF
    cpus: set[int] = set()
    for part in value.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"expected auto, off or a CPU list such as 1 or 0,2-3, got {raw!r}")
        first, last = int(low), int(high) if dash else int(low)
        if first > last:
            raise ValueError(f"a CPU range runs from low to high, got {part.strip()!r}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def format_cpus(cpus: Iterable[int]) -> str:
    """`0-2,5` for {0, 1, 2, 5}."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


@dataclass(frozen=True)
class Placement:
    """The CPUs to keep to (None: leave the process where it is) and why, for the log."""

    cpus: frozenset[int] | None
    reason: str


def choose_cpus(
    setting: CpuAffinity, *, is_sqlite: bool, available: frozenset[int] | None
) -> Placement:
    """What `setting` means for a process that may run on `available` (None: the platform
    cannot pin)."""
    if setting == OFF:
        return Placement(None, "WAGATE_CPU_AFFINITY=off")
    if setting == AUTO:
        if available is None:
            return Placement(None, "this platform cannot pin a process to CPUs")
        if not is_sqlite:
            return Placement(None, "PostgreSQL: nodes may share a machine")
        if len(available) < 2:
            return Placement(None, "only one CPU is available")
        # The highest: interrupts and other processes' threads favour the low ones.
        return Placement(
            frozenset({max(available)}), "one SQLite process (WAGATE_CPU_AFFINITY=auto)"
        )
    if available is None:
        raise AffinityError("this platform cannot pin a process to CPUs")
    missing = setting - available
    if missing:
        raise AffinityError(
            f"CPU {format_cpus(missing)} not available to this process "
            f"(available: {format_cpus(available)})"
        )
    return Placement(setting, f"WAGATE_CPU_AFFINITY={format_cpus(setting)}")


def available_cpus() -> frozenset[int] | None:
    """The CPUs this process may run on, or None where the platform cannot pin (not Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return frozenset(os.sched_getaffinity(0))


def pin_process(setting: CpuAffinity, *, is_sqlite: bool) -> None:
    """Keep every thread of this process, and those it starts later, to the chosen CPUs (or
    leave them, and log why). Call before the server starts its threads: a thread
    inherits its creator's CPUs, and every existing one is pinned here too."""
    placement = choose_cpus(setting, is_sqlite=is_sqlite, available=available_cpus())
    if placement.cpus is None:
        logger.info("not pinned to CPUs: %s", placement.reason)
        return
    for thread_id in _thread_ids():
        with contextlib.suppress(ProcessLookupError):  # the thread ended since it was listed
            os.sched_setaffinity(thread_id, placement.cpus)
    logger.info("pinned to CPU %s: %s", format_cpus(placement.cpus), placement.reason)


def _thread_ids() -> list[int]:
    """This process's threads (Linux: /proc/self/task); the calling one alone elsewhere."""
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return [0]
