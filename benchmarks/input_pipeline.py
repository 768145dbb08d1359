"""Input-pipeline throughput: edgeclf's decode-once uint8 cache + tf.data against
``tf.keras.utils.image_dataset_from_directory`` on the same folder.

Measures images/s for one full pass over the data (all batches materialised as float32
tensors, as a model would receive them):

- edgeclf, first epoch: decode every file in parallel processes into the on-disk cache,
  then one pass through the tf.data pipeline (what the first epoch of ``edgeclf train`` costs);
- edgeclf, later epoch: the next pass over the same tf.data pipeline (uint8 tensor in memory,
  batches gathered and cast to float32 by TensorFlow);
- edgeclf, new run with a cache hit: the cache is checked (one stat per file), the array read
  back, and one pass;

Decoding uses processes when TensorFlow is not yet loaded (as in ``edgeclf train``, which
decodes first) and threads otherwise (as here: Pillow releases the GIL while decoding).
- Keras, first epoch: ``image_dataset_from_directory`` (decode + resize in TensorFlow) one pass;
- Keras, later epoch: the same dataset again (it decodes every epoch);
- Keras + ``.cache()``: the tutorial's in-memory cache, first and second pass.

Usage:
    python benchmarks/input_pipeline.py                       # synthetic JPEGs, 2000 x 192px
    python benchmarks/input_pipeline.py --data DIR --image-size 180 --out figures.json

Prints a table and writes JSON with the machine, thread counts and versions beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def machine_info(workers: int) -> dict:
    import numpy
    import PIL

    from edgeclf._optional import import_tensorflow

    tf = import_tensorflow()
    try:
        cpus_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus_usable = os.cpu_count()
    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": platform.machine(), "cpu": cpu_model, "cpu_count": os.cpu_count(), "cpus_usable": cpus_usable,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "decode_workers": workers, "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(), "tensorflow": tf.__version__, "numpy": numpy.__version__,
        "pillow": PIL.__version__, "platform": platform.platform(),
    }


def one_pass(ds) -> int:
    n = 0
    for x, _ in ds:
        n += int(x.shape[0])
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="class-per-folder directory (default: generate synthetic JPEGs)")
    ap.add_argument("--images", type=int, default=2000, help="synthetic images in all (default 2000)")
    ap.add_argument("--source-size", type=int, default=192, help="synthetic image side (default 192)")
    ap.add_argument("--photo", default=None, metavar="WxH",
                    help="upscale every synthetic image to WxH and save it as a quality-90 JPEG, like a phone's "
                         "photo (e.g. 4000x3000, 12 megapixels)")
    ap.add_argument("--no-keras-cache", action="store_true", help="skip the keras + .cache() rows (slow on photos)")
    ap.add_argument("--image-size", type=int, default=128, help="model input side (default 128)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    ap.add_argument("--out", default="benchmarks/results/input_pipeline.json", help="JSON file to write")
    args = ap.parse_args(argv)

    from edgeclf._io import write_json
    from edgeclf._optional import import_keras, import_tensorflow
    from edgeclf._term import format_table
    from edgeclf.data.cache import decode_images
    from edgeclf.data.folders import scan_folder
    from edgeclf.data.synth import generate
    from edgeclf.data.tfdata import make_dataset

    work = Path(tempfile.mkdtemp(prefix="edgeclf-bench-"))
    os.environ["EDGECLF_CACHE_DIR"] = str(work / "cache")
    try:
        if args.data:
            data = Path(args.data)
        else:
            data = work / "data"
            t = time.monotonic()
            generate(data, classes=5, per_class=max(1, args.images // 5), size=args.source_size, seed=0,
                     image_format="jpg")
            if args.photo:
                _upscale_all(data, args.photo)
            print(f"generated {args.images} synthetic {args.photo or f'{args.source_size}px'} JPEGs in "
                  f"{time.monotonic() - t:.1f}s", file=sys.stderr)
        folder = scan_folder(data)
        n = len(folder.files)
        size = (args.image_size, args.image_size)
        tf = import_tensorflow()
        keras = import_keras()
        info = machine_info(args.workers)
        rows = []

        def record(name, seconds, count):
            rows.append({"pipeline": name, "seconds": round(seconds, 3), "images": count,
                         "images_per_s": round(count / seconds, 1)})

        def edgeclf_epoch():
            t = time.monotonic()
            dec = decode_images(folder.paths, size, root=folder.root, workers=args.workers, show_progress=False)
            labels = [y for p, y in folder.files if p in set(dec.paths)]
            ds = make_dataset(dec.pixels, labels, batch_size=args.batch_size, shuffle=True, seed=0)
            count = one_pass(ds)
            return time.monotonic() - t, count, ds

        s, c, ds = edgeclf_epoch()
        record("edgeclf first epoch (decode to cache + pass)", s, c)
        t = time.monotonic()
        c = one_pass(ds)
        record("edgeclf later epoch (same run)", time.monotonic() - t, c)
        s, c, _ = edgeclf_epoch()
        record("edgeclf first epoch of a new run (cache hit)", s, c)

        t = time.monotonic()
        kds = keras.utils.image_dataset_from_directory(str(data), image_size=size, batch_size=args.batch_size,
                                                       seed=0, shuffle=True)
        kds = kds.prefetch(tf.data.AUTOTUNE)
        c = one_pass(kds)
        record("keras image_dataset_from_directory, first epoch", time.monotonic() - t, c)
        t = time.monotonic()
        c = one_pass(kds)
        record("keras image_dataset_from_directory, later epoch", time.monotonic() - t, c)

        t = time.monotonic()
        cds = None if args.no_keras_cache else keras.utils.image_dataset_from_directory(str(data), image_size=size, batch_size=args.batch_size,
                                                       seed=0, shuffle=True)
        if cds is not None:
            cds = cds.cache().prefetch(tf.data.AUTOTUNE)
            c = one_pass(cds)
            record("keras + .cache() (in memory), first epoch", time.monotonic() - t, c)
            t = time.monotonic()
            c = one_pass(cds)
            record("keras + .cache() (in memory), later epoch", time.monotonic() - t, c)
        by = {r["pipeline"]: r["images_per_s"] for r in rows}
        first = by["edgeclf first epoch (decode to cache + pass)"] / by["keras image_dataset_from_directory, first epoch"]
        later = by["edgeclf later epoch (same run)"] / by["keras image_dataset_from_directory, later epoch"]
        ratios = {"first_epoch_vs_keras": round(first, 2), "later_epoch_vs_keras": round(later, 2)}

        print(f"{n} images -> {size[0]}x{size[1]}, batch {args.batch_size}; {info['cpus_usable']} usable CPUs "
              f"({info['cpu']}), {args.workers} decode workers, load avg {info['load_average_1m']:.1f}; "
              f"TF {info['tensorflow']}, Pillow {info['pillow']}, Python {info['python']}")
        print(format_table(["pipeline", "images/s", "seconds"],
                           [(r["pipeline"], f"{r['images_per_s']:.0f}", f"{r['seconds']:.2f}") for r in rows],
                           align="lrr"))
        print(f"edgeclf vs keras, same run: first epoch {first:.2f}x, later epoch {later:.2f}x")
        result = {"data": str(data) if args.data else f"synthetic: {n} JPEGs {args.source_size}px",
                  "images": n, "image_size": list(size), "batch_size": args.batch_size, "machine": info,
                  "photo": args.photo, "results": rows, "ratios": ratios}
        write_json(args.out, result)
        print(f"wrote {args.out}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _upscale_all(root: Path, photo: str) -> None:
    """Every JPEG under ``root`` resized to ``photo`` (WxH) and saved again at quality 90."""
    from PIL import Image

    w, h = (int(v) for v in photo.lower().split("x"))
    for p in sorted(root.rglob("*.jpg")):
        with Image.open(p) as im:
            big = im.convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
        big.save(p, "JPEG", quality=90)


if __name__ == "__main__":
    raise SystemExit(main())
