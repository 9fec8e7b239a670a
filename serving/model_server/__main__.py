"""``python -m serving.model_server``: ``streamrec serve-model`` as a standalone entry point (the daemon's argv)."""
from __future__ import annotations

import argparse
import logging
import sys

from serving.model_server import cli
from streamrec.config import load_settings
from streamrec.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.model_server", description=cli.__doc__)
    parser.add_argument("--config", help="YAML settings file (default: $STREAMREC_CONFIG, else embedded defaults)")
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return cli.run(args, load_settings(args.config))
    except UserError as e:
        print(f"serve-model: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
