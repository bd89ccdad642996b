"""Run the `relay` CLI in this process, optionally on uvloop or under cProfile.

    python -m benchlib.run_relay [--uvloop] [--cprofile OUT] -- serve --config PATH

Only for measuring: the benchmark starts the real console script unless it is asked for
uvloop, a cProfile profile (py-spy, when installed, attaches to the real one) or the
Python-heap figures (benchlib.memtrace, switched on by its environment variable).
"""

from __future__ import annotations

import asyncio
import cProfile
import sys


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    own, relay_args = argv[:split], argv[split + 1:]
    if "--uvloop" in own:
        import uvloop  # only installed for measuring

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    out = own[own.index("--cprofile") + 1] if "--cprofile" in own else None
    from benchlib import memtrace

    memtrace.install_from_env()

    from relay.cli import main as relay_main

    profile = cProfile.Profile() if out else None
    if profile is not None:
        profile.enable()
    try:
        relay_main(relay_args, prog_name="relay", standalone_mode=False)
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
