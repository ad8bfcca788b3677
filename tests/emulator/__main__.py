"""Run the emulator as a process: `PYTHONPATH=tests python -m emulator --port 8787 [--speed 50] ...`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .config import EmulatorConfig
from .server import OpenAIEmulator


def parse_args(argv: list[str] | None = None) -> EmulatorConfig:
    parser = argparse.ArgumentParser(prog="python -m emulator", description="OpenAI API emulator for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument("--speed", type=float, default=1.0, help="emulated seconds per real second (0 = frozen)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret", default=None, help="whsec_... (a random one is made if omitted)")
    parser.add_argument(
        "--api-key", action="append", default=None, help="accept only these keys (repeatable); default: any key"
    )
    parser.add_argument("--max-file-mb", type=float, default=512.0)
    args = parser.parse_args(argv)
    try:
        return EmulatorConfig(
            host=args.host,
            port=args.port,
            speed=args.speed,
            seed=args.seed,
            webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret,
            api_keys=args.api_key,
            max_file_bytes=int(args.max_file_mb * 1024 * 1024),
        )
    except ValueError as exc:
        parser.error(str(exc))
        raise  # parser.error exits; this keeps type checkers honest


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with OpenAIEmulator(config=config) as emu:
        print(f"OpenAI emulator listening on {emu.base_url}", flush=True)
        if config.webhook_url:
            print(f"webhooks -> {config.webhook_url} signed with {emu.webhook_secret}", flush=True)
        else:
            print(f"webhook secret: {emu.webhook_secret}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
