"""CLI commands: data. Heavy imports stay inside the command functions."""

from __future__ import annotations

import click

from ._options import emit_json, json_option, json_to_stdout

COMMANDS: list[click.Command] = []


@click.group("data")
def data_group():
    """Datasets: generate the built-in synthetic one, inspect a folder."""


@data_group.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--classes", default=5, show_default=True, type=int,
              help="Number of classes (2..10): circles, squares, triangles, stars, crosses, rings, ...")
@click.option("--per-class", default=300, show_default=True, type=int, help="Images per class.")
@click.option("--size", default=64, show_default=True, type=int, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="The same seed gives the same files (0 to 4294967295).")
@click.option("--format", "image_format", type=click.Choice(["png", "jpg"]), default="png", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def synth_command(out, classes, per_class, size, seed, image_format, overwrite):
    """Generate the built-in synthetic dataset into OUT/<class>/.

    Shapes on cluttered, noisy backgrounds: a real (small) vision task, deterministic for a
    seed, generated offline in seconds."""
    import time

    from .._term import info
    from ..data.synth import generate

    t = time.monotonic()
    r = generate(out, classes=classes, per_class=per_class, size=size, seed=seed, overwrite=overwrite,
                 image_format=image_format)
    info(f"wrote {classes * per_class} images ({per_class} per class, {size}x{size}, seed {seed}) "
         f"in {len(r.class_names)} classes to {r.out} in {time.monotonic() - t:.1f}s: {', '.join(r.class_names)}")


@data_group.command("inspect")
@click.argument("directory", type=click.Path())
@click.option("--grid", type=click.Path(dir_okay=False), default=None,
              help="Write a labelled grid of sample images to this PNG.")
@click.option("--per-class", default=4, show_default=True, type=int, help="Samples per class in the grid.")
@json_option
def inspect_command(directory, grid, per_class, json_out):
    """Counts per class, image sizes and modes, unreadable files with reasons."""
    from .._term import format_table, info, printable
    from ..data.inspect import inspect_folder, sample_grid
    from ..errors import UsageError

    if per_class < 1:
        raise UsageError(f"--per-class must be at least 1; got {per_class}")
    report = inspect_folder(directory)
    emit_json(json_out, report.to_dict())
    if not json_to_stdout(json_out):
        click.echo(f"{printable(report.root)}: {report.total} readable images in {len(report.class_names)} classes")
        click.echo(format_table(["class", "images"], [(n, c) for n, c in report.counts.items()]))
        sizes = list(report.sizes.items())
        shown = ", ".join(f"{s} ({n})" for s, n in sizes[:5]) + (f", ... {len(sizes) - 5} more" if len(sizes) > 5 else "")
        click.echo(f"sizes: {shown or '-'}")
        click.echo(f"modes: {', '.join(f'{m} ({n})' for m, n in report.modes.items()) or '-'}")
        if report.bad:
            click.echo(f"unreadable ({len(report.bad)}), skipped by training:")
            for p, reason in report.bad:
                click.echo(f"  {printable(p)}: {printable(reason)}")
        if report.ignored:
            click.echo(f"ignored ({len(report.ignored)}):")
            for p, reason in report.ignored[:20]:
                click.echo(f"  {printable(p)}: {printable(reason)}")
            if len(report.ignored) > 20:
                click.echo(f"  ... and {len(report.ignored) - 20} more")
    if grid:
        sample_grid(directory, grid, per_class=per_class)
        info(f"wrote {grid}")


COMMANDS.append(data_group)
