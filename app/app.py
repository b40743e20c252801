"""The Gradio web app: upload an image, translate it either way, watch the path.

    python app/app.py --checkpoint runs/emoji/checkpoint-final      # or: translate-app ...

It binds to 127.0.0.1 unless ``--host`` says otherwise, and makes no share link unless
``--share`` is given. The request logic (upload checks, native-size output, GIF, zip) lives in
``translate.serving``; this file is the page only.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import gradio as gr
except ImportError:  # pragma: no cover - exercised by users without the extra
    sys.exit('error: the app needs Gradio: pip install "translate[app]"')

from translate import serving
from translate.cli import HelpFormatter
from translate.config import MAX_GUIDANCE
from translate.errors import TranslateError, first_line
from translate.pipeline import TranslationOptions, Translator
from translate.solvers import METHODS

log = logging.getLogger("translate.app")

CSS = """
.gradio-container { max-width: 1100px !important; margin: auto; }
/* emoji-sized images are shown enlarged, without smoothing */
#input-image img, #output-image img {
  width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;
}
/* phone-width windows: stack the columns */
@media (max-width: 720px) {
  .stack-on-phone { flex-direction: column !important; }
  .stack-on-phone > * { width: 100% !important; min-width: 0 !important; }
}
"""
KEEP_OUTPUTS_S = 900  # GIFs and zips the page offers for download live this long


def build_demo(
    translator: Translator,
    workdir: Path,
    max_upload_mb: float = serving.MAX_UPLOAD_MB,
    max_megapixels: float = serving.MAX_MEGAPIXELS,
) -> gr.Blocks:
    """The page for one loaded ``Translator``; ``workdir`` holds example and output files."""
    handlers = _Handlers(translator, workdir, max_upload_mb, max_megapixels)
    a, b = translator.domains
    with gr.Blocks(title=f"translate: {a} ↔ {b}", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {a} ↔ {b}\n"
            "Unpaired image-to-image translation by a flow in a VAE latent space: one learned "
            f"velocity field carries {a} (t = 0) to {b} (t = 1), and back when integrated "
            "backwards."
        )
        with gr.Accordion("Model", open=False):
            gr.Markdown(serving.model_card(translator), elem_id="model-card")
        with gr.Tab("Translate"):
            _translate_tab(handlers)
        with gr.Tab("Batch"):
            _batch_tab(handlers)
    return demo


class _Handlers:
    """What the page's buttons call: settings from the page in, images and reports out."""

    def __init__(
        self, translator: Translator, workdir: Path, max_upload_mb: float, max_megapixels: float
    ) -> None:
        self.translator, self.workdir = translator, workdir
        self.max_upload_mb, self.max_megapixels = max_upload_mb, max_megapixels
        self.labels = serving.direction_labels(translator)  # page label -> a2b | b2a

    def direction_of(self, label: str) -> str:
        if label in self.labels.values():  # API callers may pass "a2b" / "b2a"
            return label
        if label not in self.labels:
            raise gr.Error(f"direction must be one of: {', '.join(self.labels)}")
        return self.labels[label]

    def default_guidance(self, direction: str) -> float:
        """The checkpoint's autoguidance weight for a direction label: what the page's guidance
        slider shows when the direction changes."""
        return self.translator.default_guidance(self.direction_of(direction))

    def translate_one(
        self,
        image: Any,
        direction: str,
        steps: float | None,
        solver: str | None,
        strength: float,
        seed=0,
        own_guidance: bool = True,
        guidance: float | None = None,
    ):
        with _user_errors():
            result = serving.translate_upload(
                self.translator,
                _upload_path(image),
                self.direction_of(direction),
                _steps(steps),
                solver,
                float(strength),
                self.max_upload_mb,
                self.max_megapixels,
                seed=_seed(seed),
                guidance=_guidance(own_guidance, guidance),
            )
        if result.note:
            gr.Info(result.note)
        strip = [(f, f"t = {t:.2f}") for f, t in zip(result.frames, result.times, strict=True)]
        gif = serving.trajectory_gif(result.frames, _output_path(self.workdir, "path", ".gif"))
        return result.image, strip, str(gif)

    def translate_batch(
        self,
        images: Any,
        direction: str,
        steps: float | None,
        solver: str | None,
        own_guidance: bool = True,
        guidance: float | None = None,
    ):
        paths = [_upload_path(payload) for payload in images or []]
        names = [_upload_name(payload) for payload in images or []]
        if not paths:
            raise gr.Error("no files given: upload some images first")
        with _user_errors():
            results, failed = serving.translate_many(
                self.translator,
                paths,
                self.direction_of(direction),
                _steps(steps),
                solver,
                max_mb=self.max_upload_mb,
                names=names,
                max_megapixels=self.max_megapixels,
                guidance=_guidance(own_guidance, guidance),
            )
        zip_path = None
        if results:
            zipped = _output_path(self.workdir, "translated", ".zip")
            zip_path = str(serving.zip_images(results, zipped))
        report = f"Translated {len(results)} of {len(paths)} files."
        if failed:
            report += "\n\nSkipped:\n" + "\n".join(f"- `{n}`: {reason}" for n, reason in failed)
        return [(im, name) for name, im in results], zip_path, report


def _steps(steps: float | None) -> int | None:
    """The page's step count: 0 (and None) is the checkpoint's own for the direction."""
    return None if steps is None or int(steps) == 0 else int(steps)


def _path_settings(handlers: _Handlers) -> list:
    """The direction, step count and solver inputs that both tabs share; they start at the
    checkpoint's own: steps 0, which stands for the checkpoint's count for the chosen direction
    (``serving.served_steps``; a checkpoint may take more steps one way, and an API call that
    leaves the steps out gets 0 too), and ``Translator.default_method``."""
    names = list(handlers.labels)
    direction = gr.Radio(names, value=names[0], label="Direction")
    counts = serving.default_steps_text(handlers.translator)
    with gr.Row():
        steps = gr.Slider(
            0,
            serving.MAX_STEPS,
            value=0,
            step=1,
            label="Steps",
            info=f"0: the checkpoint's own ({counts})",
        )
        method = gr.Dropdown(
            list(METHODS), value=handlers.translator.default_method, label="Solver"
        )
    return [direction, steps, method]


def _guidance_settings(handlers: _Handlers, direction: gr.Radio) -> list:
    """For checkpoints that keep a guide (none otherwise): whether to use the checkpoint's own
    autoguidance for each direction (on by default, also for API calls that leave both out),
    and a weight to use instead. The weight shows the checkpoint's for the chosen direction and
    follows the direction's changes."""
    if handlers.translator.guide is None:
        return []
    own = gr.Checkbox(True, label="The checkpoint's guidance")
    weight = gr.Slider(
        0.0,
        MAX_GUIDANCE,
        value=handlers.default_guidance(direction.value),
        step=0.25,
        label="Guidance",
        info="used when the checkpoint's is off; 1: the field alone, more pushes away from the "
        "weaker guide field (its guided steps run two UNets)",
    )
    direction.change(handlers.default_guidance, direction, weight, api_visibility="undocumented")
    return [own, weight]


def _translate_tab(handlers: _Handlers) -> None:
    translator = handlers.translator
    with gr.Row(equal_height=False, elem_classes="stack-on-phone"):
        with gr.Column(min_width=300):
            source = gr.Image(
                label="Input",
                type="filepath",
                image_mode=None,
                sources=["upload", "clipboard", "webcam"],
                height=300,
                elem_id="input-image",
            )
            settings = [source, *_path_settings(handlers)]
            settings.append(
                gr.Slider(
                    0.05,
                    1.0,
                    value=1.0,
                    step=0.05,
                    label="Strength",
                    info="1 translates fully; less stops part of the way along the path",
                )
            )
            if translator.info.source_noise > 0:  # a seed picks one of its translations
                settings.append(gr.Number(0, precision=0, minimum=0, label="Seed", elem_id="seed"))
            guidance = _guidance_settings(handlers, settings[1])
            run = gr.Button("Translate", variant="primary", elem_id="translate-button")
        with gr.Column(min_width=300):
            output = gr.Image(
                label="Output", type="pil", format="png", height=300, elem_id="output-image"
            )
            strip = gr.Gallery(
                label="Path (frames along t)",
                format="png",
                columns=3,
                height="auto",
                object_fit="contain",
                elem_id="trajectory",
            )
            gif = gr.File(label="Path as an animated GIF", elem_id="trajectory-gif")
    examples = _example_rows(translator, handlers.workdir, handlers.labels)
    if examples:
        gr.Examples(examples, inputs=settings[:2], label="Held-out examples")
    handler = handlers.translate_one
    if guidance:  # the last inputs; a checkpoint without source noise has no seed input
        settings += guidance
        if translator.info.source_noise <= 0:

            def handler(image, direction, steps, solver, strength, own_guidance, guidance):
                return handlers.translate_one(
                    image, direction, steps, solver, strength, 0, own_guidance, guidance
                )

    run.click(
        handler,
        inputs=settings,
        outputs=[output, strip, gif],
        api_name="translate",
        preprocess=False,  # uploads are checked by translate.serving, with clear errors
    )


def _batch_tab(handlers: _Handlers) -> None:
    with gr.Row(equal_height=False, elem_classes="stack-on-phone"):
        with gr.Column(min_width=300):
            files = gr.File(
                label="Images", file_count="multiple", file_types=["image"], elem_id="batch-files"
            )
            settings = [files, *_path_settings(handlers)]
            settings += _guidance_settings(handlers, settings[1])
            run = gr.Button("Translate all", variant="primary")
        with gr.Column(min_width=300):
            gallery = gr.Gallery(label="Translations", format="png", columns=4, height="auto")
            archive = gr.File(label="All translations (zip)")
            report = gr.Markdown(label="Report")
    run.click(
        handlers.translate_batch,
        inputs=settings,
        outputs=[gallery, archive, report],
        api_name="translate_batch",
        preprocess=False,
    )


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Every failure becomes a short ``gr.Error``; never a traceback, and the app keeps serving."""
    try:
        yield
    except gr.Error:
        raise
    except ValueError as err:  # a refused upload or setting: the message is for the user
        raise gr.Error(str(err), print_exception=False) from None
    except Exception as err:
        log.exception("translation failed")
        raise gr.Error(f"translation failed: {first_line(err)}") from None


def _seed(value: Any) -> int:
    """A seed from the page (a float from gr.Number) or an API call, by ``TranslationOptions``'
    rule; ValueError if it is not a non-negative whole number."""
    TranslationOptions(seed=value)
    return int(value)


def _guidance(own: Any, value: Any) -> float | None:
    """The autoguidance weight a request asks for: None (the checkpoint's own, per direction)
    when ``own`` is set or no weight is given, else the weight (a float from the page's slider
    or an API call; ``TranslationOptions`` checks the range)."""
    return None if own or value is None else float(value)


def _upload_path(payload: Any) -> str | None:
    """The server-side file of an upload, as sent by the page or by gradio_client."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    return str(payload)


def _upload_name(payload: Any) -> str:
    if isinstance(payload, dict):
        return payload.get("orig_name") or Path(payload.get("path") or "image").name
    return Path(str(payload)).name


def _example_rows(translator: Translator, workdir: Path, labels: dict[str, str]) -> list[list]:
    """The checkpoint's held-out images as [file, direction label] rows, both directions."""
    label_of = {direction: label for label, direction in labels.items()}
    rows = []
    for direction, images in translator.examples.items():
        for i, image in enumerate(images[:4]):
            path = workdir / "examples" / f"{direction}-{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            rows.append([str(path), label_of[direction]])
    return rows


def _output_path(workdir: Path, stem: str, suffix: str) -> Path:
    """A fresh file name in ``workdir/outputs``; older outputs are removed."""
    folder = workdir / "outputs"
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - KEEP_OUTPUTS_S
    for old in folder.iterdir():
        if old.stat().st_mtime < cutoff:
            old.unlink(missing_ok=True)
    return folder / f"{stem}-{uuid.uuid4().hex[:12]}{suffix}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="translate-app",
        description="Serve a translate checkpoint as a web page.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (local only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="make a public Gradio share link")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--max-upload-mb", type=float, default=serving.MAX_UPLOAD_MB, help="per file"
    )
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=serving.MAX_MEGAPIXELS,
        help="per image; larger pictures are refused before decoding",
    )
    return parser.parse_args(argv)


def launch(args: argparse.Namespace, block: bool = True) -> gr.Blocks:
    """Load the checkpoint once, then serve; raises ``TranslateError`` if it cannot load."""
    translator = Translator.from_pretrained(args.checkpoint, device=args.device)
    workdir = Path(tempfile.mkdtemp(prefix="translate-app-"))
    demo = build_demo(translator, workdir, args.max_upload_mb, args.max_megapixels)
    # one request at a time on a CPU (torch already uses every core); two on a GPU
    concurrency = 2 if translator.device.type == "cuda" else 1
    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=f"{args.max_upload_mb:g}mb",
        prevent_thread_lock=not block,
        allowed_paths=[str(workdir)],
        ssr_mode=False,
        theme=gr.themes.Soft(),
        css=CSS,
        quiet=not block,
    )
    return demo


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        launch(args)
    except TranslateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
