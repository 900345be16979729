"""The ``backswap`` command line: thin sub-commands over the Python API."""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backswap", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_label(subparsers)
    _add_finetune(subparsers)
    _add_bank(subparsers)
    _add_demo(subparsers)
    _add_diagnose(subparsers)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    size = "full" if args.full else "fast" if args.fast else "default"
    run_demo(args.out, size=size, seed=args.seed, image_size=args.image_size, correlation=args.correlation,
             n_labeled=args.n_labeled, segmenter=args.segmenter,
             refiner=None if args.refiner.lower() == "none" else args.refiner, finetune_epochs=args.finetune_epochs,
             epochs=args.epochs, n_train=args.n_train, progress=not args.quiet)
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    from .edge_refiner import DEFAULT_EDGE_REFINER
    from .hub import DEFAULT_SEGMENTER

    p = subparsers.add_parser(
        "demo",
        help="the offline StampBirds demo: labels -> fine-tune -> bank -> ERM vs BackSwap",
        description="Run the whole pipeline on the bundled StampBirds benchmark (no network needed) and write "
        "results.json and swap_grid.png to --out.",
    )
    p.add_argument("--out", default="backswap-demo", help="output folder (default: backswap-demo)")
    sizes = p.add_mutually_exclusive_group()
    sizes.add_argument("--full", action="store_true",
                       help="the long version: the whole StampBirds train split (3000) and test set (2400)")
    sizes.add_argument("--fast", action="store_true",
                       help="about a minute: fewer images and epochs (a smoke run; its figures mean nothing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64, help="StampBirds image side (default: 64)")
    p.add_argument("--correlation", type=float, default=1.0, help="train class/background correlation (default: 1.0)")
    p.add_argument("--n-labeled", type=int, default=None,
                   help="patch-labelled images for fine-tuning (default: 300, --fast: 60)")
    p.add_argument("--segmenter", default=DEFAULT_SEGMENTER, help="segmenter to fine-tune (name or path)")
    p.add_argument("--refiner", default=DEFAULT_EDGE_REFINER, metavar="NAME_OR_PATH",
                   help=f"learned edge refiner of the cut-out and the hole (default: {DEFAULT_EDGE_REFINER}); "
                   "'none' for the paper's route")
    p.add_argument("--finetune-epochs", type=int, default=None, help="segmenter epochs (default: 12, --fast: 1)")
    p.add_argument("--epochs", type=int, default=None, help="classifier epochs (default: 8, --fast: 1)")
    p.add_argument("--n-train", type=int, default=None,
                   help="StampBirds training images (default: 1200, --full: 3000, --fast: 400)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_run_demo)


def _run_bank(args: argparse.Namespace) -> int:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    from .build import build_bank

    world = int(os.environ.get("WORLD_SIZE", "1"))  # > 1 under torchrun
    shard_size = args.shard_size if args.shard_size is not None or world == 1 else 1024
    to_tensor = v2.Compose([v2.PILToTensor(), v2.Resize((args.size, args.size), antialias=True)])
    dataset = ImageFolder(args.image_dir, transform=to_tensor)
    refiner = None if args.refiner.lower() == "none" else args.refiner
    result = build_bank(dataset, segmenter=args.segmenter, refiner=refiner, inpainter=args.inpainter, size=args.size,
                        batch_size=args.batch_size, device=args.device, classes=dataset.classes,
                        num_workers=args.num_workers, progress=not args.no_progress, out=args.out,
                        shard_size=shard_size)
    if int(os.environ.get("RANK", "0")) == 0:
        kind = f"{len(result.shards)} shards + manifest" if shard_size else "one file"
        count = result.count if shard_size else len(result)
        print(f"wrote {count} backgrounds ({', '.join(dataset.classes)}) to {args.out} ({kind}); built "
              f"{result.build_stats['images']} now at {result.build_stats['images_per_s']:.0f} images/s")
    return 0


def _add_bank(subparsers: argparse._SubParsersAction) -> None:
    from .edge_refiner import DEFAULT_EDGE_REFINER
    from .hub import DEFAULT_SEGMENTER

    p = subparsers.add_parser(
        "bank",
        help="build a background bank from an ImageFolder (segment + inpaint)",
        description="Segment every image of IMAGE_DIR (one sub-folder per class, like torchvision's ImageFolder), "
        "inpaint the foreground and save the backgrounds with their class to a .safetensors bank. With "
        "--shard-size, --out is a directory of shards plus manifest.json: rerunning the same command resumes an "
        "interrupted build, and `torchrun --nproc_per_node=N -m torch_backswap bank ...` splits the shards "
        "between N processes (the same files, byte for byte).",
    )
    p.add_argument("image_dir", metavar="IMAGE_DIR")
    p.add_argument("--out", default="bank.safetensors",
                   help="bank file, or with --shard-size a directory (default: bank.safetensors)")
    p.add_argument("--shard-size", type=int, default=None, metavar="N",
                   help="write N backgrounds per shard into the --out directory: resumable, and split between "
                   "processes under torchrun (default: one file; 1024 under torchrun)")
    p.add_argument("--segmenter", default=DEFAULT_SEGMENTER, help="segmenter name or path")
    p.add_argument("--refiner", default=DEFAULT_EDGE_REFINER, metavar="NAME_OR_PATH",
                   help="learned edge refiner for the hole (flip-averaged, refined p > 0.2, grown size/32 px; "
                   f"default: {DEFAULT_EDGE_REFINER}); 'none' for the paper's hole (bilinear p > 0.1)")
    p.add_argument("--inpainter", default="pyramid",
                   help="pyramid (default), gray, mean, noise, scramble_pixels, scramble_patches")
    p.add_argument("--size", type=int, default=224, help="bank resolution (default: 224)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_bank)


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


def _run_diagnose(args: argparse.Namespace) -> int:
    import json

    from safetensors.torch import load_file

    from ._io import atomic_write_text
    from .diagnose import diagnose_folder, imagenet9_bg_gap
    from .classifiers import build_classifier

    model = build_classifier(args.model, num_classes=args.num_classes)
    model.load_state_dict(load_file(args.weights))
    model.to(args.device).eval()
    common = dict(ci=args.ci, confidence=args.confidence, device=args.device, seed=args.seed, progress=not args.quiet)
    if args.imagenet9:
        result = imagenet9_bg_gap(model, args.imagenet9, size=args.size, **common)
    else:
        if not args.image_dir or not args.bank:
            raise SystemExit("backswap diagnose: give IMAGE_DIR and --bank, or --imagenet9 ROOT")
        from .bank import BackgroundBank
        from .segmenter import PatchSegmenter

        segmenter = PatchSegmenter.from_pretrained(args.segmenter).to(args.device)
        result = diagnose_folder(model, args.image_dir, BackgroundBank.load(args.bank), segmenter=segmenter,
                                 size=args.size, draws=args.draws, **common)
    print(result)
    if args.json:
        atomic_write_text(args.json, json.dumps(result.as_dict(), indent=2))
    return 0


def _add_diagnose(subparsers: argparse._SubParsersAction) -> None:
    from .hub import DEFAULT_SEGMENTER

    p = subparsers.add_parser(
        "diagnose",
        help="background reliance of a classifier: accuracy on own-class vs other-class backgrounds (BG-gap)",
        description="Paste each object of IMAGE_DIR (an ImageFolder; alphas from --segmenter) without jitter on "
        "backgrounds of its own class and of other classes from --bank and report the accuracy gap with a "
        "confidence interval; or, with --imagenet9 ROOT, the official Mixed-Same vs Mixed-Rand BG-gap.",
    )
    p.add_argument("image_dir", metavar="IMAGE_DIR", nargs="?", help="test images, one sub-folder per class")
    p.add_argument("--model", default="resnet50", choices=["small_cnn", "resnet18", "resnet50"],
                   help="classifier architecture (default: resnet50)")
    p.add_argument("--weights", required=True, help="classifier weights (.safetensors state dict)")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--bank", help="background bank (.safetensors) with the classes of IMAGE_DIR")
    p.add_argument("--segmenter", default=DEFAULT_SEGMENTER, help="segmenter for the object alphas (name or path)")
    p.add_argument("--imagenet9", metavar="ROOT", help="folder holding bg_challenge/: the official protocol")
    p.add_argument("--size", type=int, default=224, help="image side fed to the model (default: 224)")
    p.add_argument("--draws", type=int, default=1, help="backgrounds of each kind per image (default: 1)")
    p.add_argument("--ci", choices=["t", "bootstrap"], default="t", help="interval: paired t (default) or bootstrap")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the result as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_diagnose)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
