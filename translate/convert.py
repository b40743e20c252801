"""Batch folder conversion: translate every image under a folder, mirroring its tree.

Safe to rerun: each output is written under a temporary name and renamed, complete outputs
are skipped, and bad inputs are reported in ``OUTPUT/failures.csv`` without stopping the run.
Batches are fixed by the whole file list, so results do not depend on what was already done
or on how many processes share the work (``accelerate launch`` / ``torchrun``).
"""

from __future__ import annotations

import csv
import errno
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from translate import atomic
from translate.atomic import atomic_file
from translate.errors import TranslateError, first_line
from translate.images import read_source, restore_alpha, scan_images, with_alpha
from translate.pipeline import TranslationOptions, Translator, finite_outputs

FORMATS = ("same", "png", "jpg", "webp")
SIZES = ("native", "model")
TMP_PREFIX = ".tmp-translate-"
FAILURES = "failures.csv"
# Pillow writer per output extension; "same" keeps these, anything else becomes PNG.
_WRITERS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".gif": "GIF",
}
_ALPHA_WRITERS = {"PNG", "WEBP", "TIFF"}


@dataclass(frozen=True)
class ConvertOptions:
    """How to translate and write; the defaults match the command line's."""

    direction: str = "a2b"
    steps: int | None = None  # None: the checkpoint's own (Translator.default_steps)
    method: str | None = None  # None: the checkpoint's own (Translator.default_method)
    strength: float = 1.0
    seed: int = 0  # the source noise of a source-noised model
    # None: the checkpoint's own for the direction (Translator.default_guidance)
    guidance: float | None = None
    batch_size: int = 16
    size: str = "native"  # native: keep each input's size; model: square model resolution
    format: str = "same"  # same | png | jpg | webp
    quality: int = 95  # jpg and webp
    overwrite: bool = False

    def __post_init__(self) -> None:
        try:
            TranslationOptions(
                self.direction, self.steps, self.method, self.strength, self.seed, self.guidance
            )
        except ValueError as err:
            raise TranslateError(f"--{err}") from None
        for name, value, choices in (("size", self.size, SIZES), ("format", self.format, FORMATS)):
            if value not in choices:
                raise TranslateError(f"--{name} must be one of {', '.join(choices)}; got {value}")
        if self.batch_size < 1 or not 1 <= self.quality <= 100:
            raise TranslateError("--batch-size must be >= 1, --quality in 1..100")


@dataclass(frozen=True)
class Job:
    """One input file and where its translation goes."""

    source: Path
    target: Path


@dataclass
class Summary:
    """What a run did; ``failures`` holds (path, reason) pairs."""

    converted: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    disk_full: bool = False  # an output failed with ENOSPC

    def merge(self, other: Summary) -> None:
        self.converted += other.converted
        self.skipped += other.skipped
        self.failures += other.failures
        self.notes += other.notes
        self.disk_full |= other.disk_full

    def line(self) -> str:
        line = (
            f"converted {self.converted}, skipped {self.skipped} (already done), "
            f"failed {len(self.failures)}"
        )
        if self.disk_full:
            line += (
                "; the disk is full: free space and rerun the same command "
                "(the finished outputs are kept and skipped)"
            )
        return line


def target_path(source: Path, input_root: Path, output_root: Path, fmt: str) -> Path:
    """The output path of ``source``: same relative tree and base name, extension by format."""
    relative = source.relative_to(input_root) if source != input_root else Path(source.name)
    suffix = source.suffix.lower() if fmt == "same" else f".{fmt}"
    if suffix not in _WRITERS:
        suffix = ".png"
    return output_root / relative.with_suffix(suffix)


def check_paths(input_path: Path, output_root: Path, writable: bool = True) -> None:
    """Usage errors, each one line: missing input, output inside input, unwritable output."""
    if not input_path.exists():
        raise TranslateError(f"INPUT not found: {input_path}")
    inp, out = input_path.resolve(), output_root.resolve()
    if input_path.is_dir() and (out == inp or inp in out.parents):
        raise TranslateError(f"OUTPUT {output_root} is inside INPUT {input_path}; choose another")
    if not writable:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f"{TMP_PREFIX}probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise TranslateError(f"OUTPUT is not writable: {output_root} ({err.strerror})") from None


def plan_jobs(input_path: Path, output_root: Path, fmt: str) -> list[Job]:
    """Every image under ``input_path`` (or the file itself), sorted, with a unique target.

    Inputs whose targets would coincide (``photo.jpg`` and ``photo.png`` with ``--format png``)
    each keep their whole file name before the new extension (``photo.jpg.png``,
    ``photo.png.png``): deterministic, and no output overwrites another. Raises TranslateError
    if names still collide.
    """
    if input_path.is_file():
        return [Job(input_path, target_path(input_path, input_path, output_root, fmt))]
    scan = scan_images(input_path)  # broken links stay jobs: each gets its failure row
    sources = sorted(scan.files + scan.broken_links)
    jobs = [Job(p, target_path(p, input_path, output_root, fmt)) for p in sources]
    claims: dict[str, int] = {}
    for job in jobs:
        claims[str(job.target).lower()] = claims.get(str(job.target).lower(), 0) + 1
    jobs = [
        Job(j.source, j.target.with_name(j.source.name + j.target.suffix))
        if claims[str(j.target).lower()] > 1
        else j
        for j in jobs
    ]
    seen: dict[str, Path] = {}
    for job in jobs:
        other = seen.setdefault(str(job.target).lower(), job.source)
        if other != job.source:
            raise TranslateError(f"{other} and {job.source} would both be written to {job.target}")
    return jobs


def oriented_size(path: Path) -> tuple[int, int] | None:
    """(width, height) after EXIF orientation, from the header alone; None if unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
                return height, width
            return width, height
    except Exception:
        return None


def plan_batches(jobs: list[Job], translator: Translator, opts: ConvertOptions) -> list[list[Job]]:
    """Group jobs of equal working shape into batches, in file order (independent of progress)."""
    groups: dict[object, list[Job]] = {}
    for job in jobs:
        size = oriented_size(job.source)
        if opts.size == "model" or size is None:
            key: object = "model" if size else "unreadable"
        else:
            key = translator.working_size(*size)
        groups.setdefault(key, []).append(job)
    return [
        group[i : i + opts.batch_size]
        for group in groups.values()
        for i in range(0, len(group), opts.batch_size)
    ]


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a whole, readable image."""
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:
        return False


def write_image(image: Image.Image, alpha: Image.Image | None, target: Path, quality: int) -> None:
    """Save atomically: a temporary file in the same folder, then a rename."""
    writer = _WRITERS[target.suffix.lower()]
    if writer in _ALPHA_WRITERS:
        image = with_alpha(image, alpha)
    options = {"quality": quality} if writer in ("JPEG", "WEBP") else {}
    buffer = io.BytesIO()
    image.save(buffer, format=writer, **options)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target, prefix=TMP_PREFIX) as tmp:
        tmp.write_bytes(buffer.getvalue())


def clean_temporaries(output_root: Path) -> None:
    """Remove temporary files left by a killed run."""
    atomic.clean_temporaries(output_root, (TMP_PREFIX,), recursive=True)


def translate_batch(
    translator: Translator, images: list[Image.Image], opts: ConvertOptions
) -> list[Image.Image]:
    """Translate one batch; on CUDA out-of-memory, retry it in halves."""
    try:
        return translator(
            images,
            opts.direction,
            opts.steps,
            opts.method,
            opts.strength,
            batch_size=len(images),
            size=opts.size,
            seed=opts.seed,
            guidance=opts.guidance,
        )
    except torch.cuda.OutOfMemoryError:
        if len(images) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(images) // 2
        return translate_batch(translator, images[:half], opts) + translate_batch(
            translator, images[half:], opts
        )


def convert_batches(
    translator: Translator,
    batches: list[list[Job]],
    opts: ConvertOptions,
    progress: Callable[[int], None] = lambda n: None,
) -> Summary:
    """Convert the given batches; never raises for a bad input file."""
    summary = Summary()
    for batch in batches:
        todo = [job for job in batch if opts.overwrite or not is_complete(job.target)]
        summary.skipped += len(batch) - len(todo)
        if not todo:
            progress(len(batch))
            continue
        loaded = []
        for job in batch:  # the whole batch is translated, so results never depend on progress
            try:
                source = read_source(job.source)
            except ValueError as err:
                if job in todo:
                    summary.failures.append((str(job.source), str(err)))
                continue
            if source.note and job in todo:
                summary.notes.append((str(job.source), source.note))
            loaded.append((job, source))
        if loaded:
            outputs = finite_outputs(
                lambda images: translate_batch(translator, images, opts),
                [s.rgb for _, s in loaded],
            )
            for (job, source), output in zip(loaded, outputs, strict=True):
                if job not in todo:
                    continue
                if isinstance(output, str):
                    summary.failures.append((str(job.source), output))
                    continue
                try:
                    alpha = restore_alpha(source.alpha, output, opts.size)
                    write_image(output, alpha, job.target, opts.quality)
                    summary.converted += 1
                except OSError as err:
                    summary.disk_full |= err.errno == errno.ENOSPC
                    reason = err.strerror or str(err)
                    summary.failures.append((str(job.source), f"cannot write output: {reason}"))
        progress(len(batch))
    return summary


def write_failures(output_root: Path, failures: list[tuple[str, str]]) -> Path | None:
    """``OUTPUT/failures.csv`` with one row per failed input (path, reason), atomically.

    Written only when something failed (None otherwise); a stale one from an earlier run is
    then removed, so the file always describes the last run. Raises OSError (e.g. a full disk)
    after removing its temporary file; an existing report is then left as it was.
    """
    path = output_root / FAILURES
    if not failures:
        path.unlink(missing_ok=True)
        return None
    with (
        atomic_file(path, prefix=TMP_PREFIX) as tmp,
        tmp.open("w", newline="", encoding="utf-8") as f,
    ):
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows(sorted(failures))
    return path


def shard(batches: list[list[Job]], rank: int, world_size: int) -> list[list[Job]]:
    """This process's share of the batches (round-robin: every batch exactly once)."""
    return batches[rank::world_size]


def iter_dry_run(jobs: list[Job], opts: ConvertOptions) -> Iterator[str]:
    """Lines describing what a real run would do, writing nothing: ``skip``, ``convert``, or
    ``fail`` with the reason, for each input (each is decoded as the real run would)."""
    for job in jobs:
        if not opts.overwrite and is_complete(job.target):
            yield f"skip\t{job.source}\t{job.target}"
            continue
        try:
            read_source(job.source)
        except ValueError as err:
            yield f"fail\t{job.source}\t{err}"
            continue
        yield f"convert\t{job.source}\t{job.target}"


def convert_folder(
    checkpoint: str | Path,
    input_path: Path,
    output_root: Path,
    opts: ConvertOptions,
    device: str = "auto",
    vae_dtype: str = "auto",
    dry_run: bool = False,
) -> int:
    """Convert ``input_path`` into ``output_root`` (``translate-folder``), sharded over the
    processes of a ``torchrun``/``accelerate launch`` group.

    Prints the progress, one summary line and the failures' report; returns the exit status
    (0: all converted, 1: some failed or, with ``dry_run``, unreadable). Raises
    TranslateError for a missing checkpoint or unusable paths.
    """
    from accelerate import PartialState

    if not Path(checkpoint).exists():
        raise TranslateError(f"checkpoint not found: {checkpoint}")
    check_paths(input_path, output_root, writable=not dry_run)
    jobs = plan_jobs(input_path, output_root, opts.format)
    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    try:
        if not dry_run:
            return _convert_shard(checkpoint, output_root, opts, jobs, state, device, vae_dtype)
        unreadable = 0
        if state.is_main_process:
            for line in iter_dry_run(jobs, opts):
                unreadable += line.startswith("fail\t")
                print(line)
            print(f"dry run: {len(jobs)} image(s) found, {unreadable} unreadable; nothing written")
        return 1 if unreadable else 0
    finally:
        state.destroy_process_group()


def _convert_shard(checkpoint, output_root, opts, jobs, state, device, vae_dtype) -> int:
    """Convert this process's share of the batches and report the merged summary."""
    import sys

    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    device = state.device if device == "auto" else device
    translator = Translator.from_pretrained(checkpoint, device=device, vae_dtype=vae_dtype)
    translator.check_guidance(opts.guidance)
    if state.is_main_process:
        clean_temporaries(output_root)
    state.wait_for_everyone()
    batches = plan_batches(jobs, translator, opts)
    mine = shard(batches, state.process_index, state.num_processes)
    with tqdm(
        total=sum(map(len, mine)), unit="img", desc="translating", disable=not state.is_main_process
    ) as bar:
        summary = convert_batches(translator, mine, opts, bar.update)
    for path, note in summary.notes:
        print(f"note: {path}: {note}", file=sys.stderr)
    parts = gather_object([summary]) if state.num_processes > 1 else [summary]
    total = Summary()
    for part in parts:
        total.merge(part)
    if state.is_main_process:
        print(total.line() + _failure_report(output_root, total.failures))
    state.wait_for_everyone()
    return 1 if total.failures else 0


def _failure_report(output_root: Path, failures: list[tuple[str, str]]) -> str:
    """Write failures.csv; the summary's tail. If it cannot be written (a full disk), the
    reasons go to stderr instead, one line each, so that none is lost."""
    import sys

    try:
        path = write_failures(output_root, failures)
    except OSError as err:
        for source, reason in failures:
            print(f"failed: {source}: {reason}", file=sys.stderr)
        return f"; could not write {FAILURES} ({first_line(err)}): reasons above"
    return f"; reasons in {path}" if path else ""
