"""``python -m depthadapt.annotate --images DIR --output labels.jsonl``: label ordinal depth pairs in a browser."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from depthadapt.annotate.server import listen, open_session, serve


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (what is wrong and where to look), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} ({self.prog} --help lists the options)\n")


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: the system picks a free one)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give 0 to 65535 (0 picks a free one)")
    return port


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of the annotation server."""
    parser = OneLineParser(
        prog="python -m depthadapt.annotate",
        description="Serve a web page to label ordinal depth pairs (WeSTAR weak labels) for a folder of images.",
    )
    parser.add_argument("--images", required=True, help="folder of images to label (recursive)")
    parser.add_argument("--output", required=True,
                        help="JSON Lines labels file (data.weak_labels.ordinal_file); an existing one is resumed")
    parser.add_argument("--pairs-per-image", type=int, default=5,
                        help="structured samples per image (anchor + farther + closer point = 3 pairs each); "
                             "default 5, the paper's")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 shares the page on the network (anyone with the "
                             "printed address and its token can label)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (0 picks a free one)")
    parser.add_argument("--depth-dir", help="folder of depth maps named like the images, shown as an overlay")
    parser.add_argument("--force", action="store_true",
                        help="accept an --output that also holds labels of other images (those lines are kept)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server; bad input prints one line saying what to change and returns 2."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with listen(args.host, args.port) as sock:  # first: a busy port fails before every image is decoded
            session = open_session(args.images, args.output, args.pairs_per_image, args.depth_dir, args.force)
            serve(session, sock, args.host)
    except (ValueError, OSError) as err:  # bad input: a folder, a labels file, a port
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
