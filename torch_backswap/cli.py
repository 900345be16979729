"""The ``backswap`` command line: thin sub-commands over the Python API."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backswap", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_label(subparsers)
    _add_finetune(subparsers)
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


def _run_finetune(args: argparse.Namespace) -> int:
    import time

    from .finetune import finetune_segmenter
    from .labels import PatchLabels

    labels = PatchLabels.read(args.labels)
    labels.validate_images(args.image_dir)
    start = None if args.scratch else args.start
    scratch = {"backbone": args.backbone} if args.scratch and args.backbone else None
    tic = time.perf_counter()
    _, history = finetune_segmenter(
        start, args.image_dir, labels, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        val_fraction=args.val_fraction, seed=args.seed, device=args.device, optimizer=args.optimizer,
        output_dir=args.out, progress=not args.no_progress, scratch_kwargs=scratch)
    seconds = time.perf_counter() - tic
    scored = [h for h in history if h.get("val_balanced_accuracy") is not None]
    best = max(scored, key=lambda h: h["val_balanced_accuracy"]) if scored else None
    if best is not None:
        print(f"best validation patch balanced accuracy {best['val_balanced_accuracy']:.4f} "
              f"(epoch {best['epoch']}/{len(history)}), {seconds:.0f} s; saved to {args.out}")
    else:
        print(f"trained {len(history)} epoch(s) in {seconds:.0f} s; saved to {args.out}")
    return 0


def _add_finetune(subparsers: argparse._SubParsersAction) -> None:
    from .hub import DEFAULT_SEGMENTER

    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a patch segmenter on patch labels",
        description="Fine-tune a PatchSegmenter on the images in IMAGE_DIR with the patch labels in LABELS "
        "(paper masks.csv, backswap CSV or JSON; ids are image paths relative to IMAGE_DIR). The model "
        "with the best validation patch balanced accuracy is saved to --out (save_pretrained + history.json).",
    )
    p.add_argument("image_dir", metavar="IMAGE_DIR", help="folder of the labelled images")
    p.add_argument("labels", metavar="LABELS", help="patch-label file")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory for the best model")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from", dest="start", default=DEFAULT_SEGMENTER, metavar="NAME_OR_PATH",
                       help=f"segmenter to start from (default: {DEFAULT_SEGMENTER})")
    start.add_argument("--scratch", action="store_true", help="train a new segmenter from scratch")
    p.add_argument("--backbone", default=None, help="with --scratch: backbone (default: tiny)")
    p.add_argument("--epochs", type=int, default=30, help="epochs (default: 30)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 3e-3 AdamW / 0.3 SGD)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held-out share (default: 0.2)")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw", help="optimizer (default: adamw)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_finetune)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
