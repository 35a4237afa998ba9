"""``python -m meddx.runtime BUNDLE FILE_OR_FOLDER...``: one JSON line per input, no torch needed.

A folder is read as ``meddx predict`` reads it: every image under it (masks beside their images
skipped), and for 3D bundles each DICOM series folder is one volume.

Segmenters also write ``NAME_mask.nii.gz`` / ``NAME_mask.png`` into ``--masks DIR``; when an input
fails part-way, the masks this call wrote are removed again (as ``meddx predict`` does) and the JSON
lines that would name them are not printed. Errors, command-line mistakes included, print one line
and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meddx.errors import MeddxError

PROG = "python -m meddx.runtime"


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line with the fix, like every other meddx error (not its usage block)."""

    def error(self, message: str):
        print(f"error: {message}. Fix: see `{PROG} --help`.", file=sys.stderr)
        sys.exit(2)


def _threads(text: str) -> int:
    n = int(text) if text.strip().lstrip("-").isdigit() else 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, got {text!r}")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("bundle", help="bundle folder written by `meddx export` or `meddx compress`")
    ap.add_argument("files", nargs="+", help="PNG/JPEG/TIFF, DICOM file or series folder, NIfTI, or a folder of them")
    ap.add_argument("--masks", type=Path, default=None, help="segmenters: folder for the masks")
    ap.add_argument("--threads", type=_threads, default=None, help="onnxruntime threads (1 or more)")
    a = ap.parse_args(argv)
    try:
        from meddx.runtime import load

        b = load(a.bundle, threads=a.threads)
        if a.masks is not None and b.task != "segment":
            raise MeddxError(f"--masks is for segmentation bundles, and this one is a {b.task} bundle",
                             path=a.bundle, fix="leave --masks out")
        from meddx.evaluation.inputs import collect_inputs
        from meddx.io.formats import output_stems

        sp = b.preprocessing
        files = [p for f in a.files for p in collect_inputs(Path(f), sp.spatial_dims, sp.channel_files)]
        stems = output_stems(files, sp.channel_files)  # a/x.png and b/x.png: two masks, not one
        if b.task == "segment" and a.masks is not None:
            from meddx.evaluation.seg_predict import all_or_nothing

            created = not a.masks.exists()
            a.masks.mkdir(parents=True, exist_ok=True)
            lines = []
            with all_or_nothing(a.masks, created, lambda: None):  # a failing third file: no masks left behind
                for f in files:
                    r = b.predict(f)
                    lines.append({**r.to_dict(), "mask_file": str(r.write_mask(a.masks / stems[f]))})
            for d in lines:
                print(json.dumps(d), flush=True)
            return 0
        for f in files:
            print(json.dumps(b.predict(f).to_dict()), flush=True)
    except MeddxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: as `meddx` answers it, not a traceback
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a path the user gave: --masks onto a file, no permission (as `meddx` reports it)
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error:{where}: {e.strerror or e}. Fix: check that the path exists and is writable.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
