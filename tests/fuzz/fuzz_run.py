"""What the fuzz drivers share: their arguments, hypothesis settings and the closing line.

The seed is fixed unless ``--seed`` is given (hypothesis' ``derandomize``), so CI draws the same
inputs every run and a failure reproduces; a seed explores other inputs by hand.
"""

from __future__ import annotations

import argparse
import resource
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, seed, settings

_started = time.monotonic()


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--examples", type=int, default=300, help="hypothesis max_examples")
    parser.add_argument("--seed", type=int, default=None, help="draw other inputs (default: fixed)")
    parser.add_argument(
        "--shrink", action="store_true", help="shrink a failing input (can take minutes)"
    )
    return parser.parse_args()


def fuzz_settings(args: argparse.Namespace) -> Callable[[Any], Any]:
    chosen = settings(
        max_examples=args.examples,
        deadline=None,  # the driver times each input itself
        database=None,  # nothing written into the working tree
        derandomize=args.seed is None,
        print_blob=True,
        # without shrinking a failure is reported as drawn, in seconds rather than minutes
        phases=list(Phase) if args.shrink else [p for p in Phase if p != Phase.shrink],
        suppress_health_check=list(HealthCheck),  # big, slow-to-draw inputs are the point
    )

    def apply(test: Callable[..., None]) -> Any:
        test = chosen(test)
        return test if args.seed is None else seed(args.seed)(test)

    return apply


def report(title: str, fuzz: Callable[[], None], tally: Counter[str], args: Any) -> int:
    """Run ``fuzz``; print one line with the count of inputs tried (the test parses it)."""
    failed = False
    try:
        fuzz()
    except BaseException:  # hypothesis re-raises the (shrunk) failures, possibly as a group
        traceback.print_exc()
        failed = True
    tried = tally.pop("inputs tried", 0)
    details = ", ".join(f"{key} {count}" for key, count in sorted(tally.items()))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(
        f"{title}: {tried} inputs tried, {'FAILED' if failed else '0 failures'} "
        f"(seed: {'fixed' if args.seed is None else args.seed}; {details}; "
        f"peak RSS {peak_mib} MiB; {time.monotonic() - _started:.1f} s)",
        flush=True,
    )
    return 1 if failed else 0
