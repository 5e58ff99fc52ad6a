"""A sweep outside pytest: ``python -m tests.sim.sweep --seeds 400 --profiles calm,aws``.

Runs seeds 0..N-1 of each profile named, prints one line per violating seed (with its
replay command) and a summary: schedules run, fault kinds injected, violations.
"""

from __future__ import annotations

import argparse
import time

from tests.sim.world import simulate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--profiles", default="calm,aws,machines,zombies,reshards,deploy")
    args = parser.parse_args()
    started = time.process_time()
    runs = 0
    kinds: set[str] = set()
    bad: list[str] = []
    totals = {
        "records": 0,
        "resent_puts": 0,
        "late_pages": 0,
        "objects_deleted": 0,
        "expired_signatures": 0,
        "re_created_deleted_again": 0,
    }
    for profile in args.profiles.split(","):
        failed = 0
        for seed in range(args.first, args.first + args.seeds):
            result = simulate(seed, profile)
            runs += 1
            kinds |= result.kinds
            for name in totals:
                totals[name] += result.stats[name]
            if result.violations:
                failed += 1
                line = f"VIOLATION seed={seed} profile={profile}: {result.violations[0][:300]}"
                bad.append(line)
                print(line, flush=True)
        print(f"{profile}: {args.seeds} schedules, {failed} violating", flush=True)
    cpu = time.process_time() - started
    print(f"schedules={runs} cpu_s={cpu:.0f} kinds={len(kinds)} {sorted(kinds)}")
    print(f"totals={totals} violations={len(bad)}")


if __name__ == "__main__":
    main()
