"""A process that holds the shared stack, for the tests: ``python holder_proc.py [options]``.

Acquires the stack of the project in the working directory, prints one JSON
line (pid, stack, acquire seconds, endpoints, env), then holds it until stdin
reaches EOF (or for ``--hold`` seconds) and releases it. An envkit error is
printed as ``{"error": TYPE, "message": ...}`` and exits 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import envkit


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", action="append", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--ttl", type=float, default=None)
    parser.add_argument(
        "--hold", type=float, default=None, help="seconds to hold (default: until stdin closes)"
    )
    parser.add_argument("--start-at", type=float, default=None, help="wall-clock time to start acquiring")
    args = parser.parse_args()
    if args.start_at is not None:
        time.sleep(max(0.0, args.start_at - time.time()))
    started = time.monotonic()
    try:
        held = envkit.acquire(services=args.service, keep=args.keep, ttl=args.ttl)
    except envkit.EnvkitError as err:
        print(json.dumps({"error": type(err).__name__, "message": str(err)}), flush=True)
        return 3
    try:
        handle = held.handle
        print(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "stack": handle.stack,
                    "acquire": time.monotonic() - started,
                    "ports": {s: {str(p): hp for p, hp in ps.items()} for s, ps in handle.ports.items()},
                    "env": handle.env(),
                }
            ),
            flush=True,
        )
        if args.hold is not None:
            time.sleep(args.hold)
        else:
            sys.stdin.read()
    finally:
        held.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
