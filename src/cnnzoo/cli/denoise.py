"""`cnnzoo denoise WEIGHTS IN OUT [--sigma S]`: denoise an image file with DnCNN, and
`cnnzoo denoise WEIGHTS --eval DATA`: mean PSNR/SSIM per test set at a noise level.

WEIGHTS is the official DnCNN file (a legacy whole-module pickle, read without running any
code from it) or a checkpoint written by `cnnzoo train --task denoise`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import CnnzooError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "denoise", help="remove Gaussian noise from an image with DnCNN, or score it on test sets",
        description="Denoise IN into OUT. Without --sigma, IN is a noisy photo. With --sigma S, IN is a clean "
                    "image: seeded Gaussian noise of level S (0-255 scale) is added first and the PSNR/SSIM of "
                    "the noisy and denoised images are printed. With --eval DATA (a folder or .tar.gz whose "
                    "sub-folders are test sets), prints the mean PSNR/SSIM per test set instead.",
    )
    p.add_argument("weights", help="official DnCNN .pth or a `cnnzoo train --task denoise` checkpoint")
    p.add_argument("input", nargs="?", metavar="IN", help="image to denoise")
    p.add_argument("output", nargs="?", metavar="OUT", help="where to write the denoised image")
    p.add_argument("--sigma", type=float, help="add Gaussian noise of this level (0-255 scale) to IN first")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--noisy-out", metavar="PATH", help="also write the noisy image (with --sigma)")
    p.add_argument("--eval", metavar="DATA", help="score the test sets of DATA instead of denoising one file")
    p.add_argument("--sets", help="test sets (sub-folders) to score, comma-separated (default: all but train*)")
    p.add_argument("--per-image", action="store_true", help="with --eval, one line per image")
    p.add_argument("--tile", type=int, default=1024, help="process images larger than this in tiles (default 1024)")
    p.add_argument("--force", action="store_true", help="allow OUT to be the same file as IN (overwrite the input)")
    p.add_argument("--device", default="auto")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled Python objects in a cnnzoo checkpoint (trusted files only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.runtime import resolve_device
    from ..tasks.denoise_task import load_denoiser

    if args.eval is None and (args.input is None or args.output is None):
        raise CnnzooError("give IN and OUT image paths, or --eval DATA")
    if args.eval is not None and args.input is not None:
        raise CnnzooError("--eval scores test sets; leave out IN and OUT")
    if args.sigma is not None and args.sigma < 0:
        raise CnnzooError(f"--sigma must be >= 0, got {args.sigma}")
    if args.tile < 128:
        raise CnnzooError(f"--tile must be at least 128 pixels, got {args.tile}")
    if args.output is not None:
        check_output(args.input, args.output, args.force)
        if args.noisy_out is not None:
            check_output(args.input, args.noisy_out, args.force, flag="--noisy-out")
            if Path(args.noisy_out).absolute() == Path(args.output).absolute() or _same_file(args.noisy_out, args.output):
                raise CnnzooError(f"--noisy-out {args.noisy_out} is OUT too; give the noisy image another name")
    elif args.noisy_out is not None:
        raise CnnzooError("--noisy-out goes with IN OUT --sigma S (the noisy copy of a denoised file)")
    model, description = load_denoiser(args.weights, trust=args.trust_checkpoint, device=resolve_device(args.device))
    print(f"model: {description}")
    return evaluate_sets(model, args) if args.eval is not None else denoise_file(model, args)


def denoise_file(model, args: argparse.Namespace) -> int:
    from ..tasks import denoise as dn

    image = dn.load_image_for(args.input, model.in_chans, Path(args.weights).name)
    kind = "grey" if model.in_chans == 1 else "RGB"
    if args.sigma is None:
        estimate = dn.denoise(model, image, tile=args.tile)
        dn.save_image(estimate, args.output)
        print(f"denoised {args.input} ({image.shape[2]}x{image.shape[1]} {kind}) -> {args.output}")
        return 0
    noisy = dn.add_gaussian_noise(image, args.sigma, generator=_generator(args.seed))
    estimate = dn.denoise(model, noisy, tile=args.tile)
    dn.save_image(estimate, args.output)
    if args.noisy_out:
        dn.save_image(noisy, args.noisy_out)
    print(f"{args.input} ({image.shape[2]}x{image.shape[1]} {kind}) + Gaussian noise sigma {args.sigma:g} "
          f"(seed {args.seed})")
    print(f"noisy:    PSNR {float(dn.psnr(noisy, image)):6.2f} dB  SSIM {float(dn.ssim(noisy.clamp(0, 1), image)):.4f}")
    print(f"denoised: PSNR {float(dn.psnr(estimate, image)):6.2f} dB  SSIM {float(dn.ssim(estimate, image)):.4f}"
          f"  -> {args.output}")
    return 0


def _generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


def evaluate_sets(model, args: argparse.Namespace) -> int:
    from ..tasks.denoise_task import evaluate_sets as score

    sets = [s.strip() for s in args.sets.split(",") if s.strip()] if args.sets else None
    report = score(model, args.eval, sets=sets, sigma=25.0 if args.sigma is None else args.sigma, seed=args.seed,
                   tile=args.tile)
    for line in report.lines(per_image=args.per_image):
        print(line)
    return 0


def check_output(source: str, output: str, force: bool, flag: str = "OUT") -> None:
    """Refuse, before any work, to overwrite the input (by any path to it: a symlink, a hard link,
    `./a/../in.png`) or to write where nothing can be written."""
    src, out = Path(source), Path(output)
    if src.is_dir():
        raise CnnzooError(f"IN {source} is a folder; give one image file (score folders with --eval DATA)")
    if _same_file(out, src) and not force:
        how = "" if out.absolute() == src.absolute() else " (another path to the same file)"
        raise CnnzooError(f"{flag} {output} is the input image{how}; choose another file, or pass --force to "
                          "overwrite it")
    if out.is_dir():
        raise CnnzooError(f"cannot write {output}: it is a folder; give a file name such as {out / 'denoised.png'}")
    if not out.parent.is_dir():
        raise CnnzooError(f"cannot write {output}: the folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise CnnzooError(f"cannot write {output}: permission denied")


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file; a symlink at `a` pointing to `b`, even dangling, counts."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.is_symlink() and Path(os.path.realpath(a)) == Path(os.path.realpath(b))
