"""The ``backswap`` command line: thin sub-commands over the Python API."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backswap", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_label(subparsers)
    return parser


def _run_label(args: argparse.Namespace) -> int:
    from .labeler import serve_labeler

    server = serve_labeler(
        args.image_dir,
        grid_size=args.grid,
        out=args.out,
        segmenter=args.segmenter,
        port=args.port,
        active=not args.no_active,
        retrain_every=args.retrain_every,
        paper_format=args.paper_format,
        verbose=args.verbose,
    )
    state = server.session.state()
    print(f"labeling {args.image_dir} on a {args.grid}x{args.grid} grid; {state['labeled']} labels in {args.out}")
    print(f"open {server.url}  (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _add_label(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "label",
        help="patch-labeling web page on 127.0.0.1",
        description="Serve a local web page to paint patch labels over the images in IMAGE_DIR. "
        "Labels are written to --out after every image; restarting resumes from it.",
    )
    p.add_argument("image_dir", metavar="IMAGE_DIR", help="folder of images (searched recursively)")
    p.add_argument("--grid", type=int, default=16, help="cells per side (default: 16)")
    p.add_argument("--out", default="labels.csv", help="labels file (default: labels.csv)")
    p.add_argument("--segmenter", default=None, metavar="NAME",
                   help="PatchSegmenter name or path: pre-fills cells and picks the most uncertain image next")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--retrain-every", type=int, default=None, metavar="N",
                   help="with --segmenter: fine-tune it in the background every N new labels")
    p.add_argument("--no-active", action="store_true", help="with --segmenter: keep folder order")
    p.add_argument("--paper-format", action="store_true", help="write the paper's masks.csv layout (info,mask)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=_run_label)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
