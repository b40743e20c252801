"""The web app, served for real on a free localhost port: gradio_client API calls and a real
headless Chromium driven by Playwright (the system's Chromium; nothing is downloaded)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
from gradio_client import Client, handle_file
from translate_app.app import launch, parse_args

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
MAX_MB = 1  # a small upload limit, so the limit itself can be tested cheaply


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_vae):
    from helpers import draw_shape, tiny_translator

    rng = np.random.default_rng(0)
    translator = tiny_translator(tiny_vae, "circles", "squares")
    # the checkpoint's default step counts (B -> A its own) and solver
    translator.info.config = {"sample": {"steps": 3, "b2a_steps": 5, "method": "midpoint"}}
    translator.examples = {
        "a2b": [draw_shape("A", 16, rng) for _ in range(2)],
        "b2a": [draw_shape("B", 16, rng) for _ in range(2)],
    }
    path = tmp_path_factory.mktemp("app") / "checkpoint"
    translator.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(checkpoint):
    port = _free_port()
    args = parse_args(
        ["--checkpoint", str(checkpoint), "--port", str(port), "--max-upload-mb", str(MAX_MB)]
    )
    demo = launch(args, block=False)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server[1], verbose=False)


@pytest.fixture
def rgba_image(tmp_path):
    """A non-square RGBA image with a transparent border."""
    image = Image.new("RGBA", (50, 30), (0, 0, 0, 0))
    image.paste((200, 40, 40, 255), (10, 5, 40, 25))
    path = tmp_path / "shape with space é.png"
    image.save(path)
    return path


def _translate(client, path, direction="circles → squares", steps=2, solver="euler", strength=1.0):
    return client.predict(
        handle_file(str(path)), direction, steps, solver, strength, api_name="/translate"
    )


def test_binds_to_localhost_without_share_link_by_default(server):
    args = parse_args(["--checkpoint", "x"])
    assert (args.host, args.share) == ("127.0.0.1", False)
    demo, _ = server
    assert demo.server_name == "127.0.0.1" and demo.share_url is None


def test_the_step_sliders_and_solvers_start_at_the_checkpoint_default(server):
    demo, _ = server
    sliders = [block for block in demo.blocks.values() if getattr(block, "label", None) == "Steps"]
    # 0: the checkpoint's own for the chosen direction, which the slider names
    assert len(sliders) == 2 and all(slider.value == 0 for slider in sliders)
    assert all("A→B 3, B→A 5" in slider.info for slider in sliders)
    solvers = [block for block in demo.blocks.values() if getattr(block, "label", None) == "Solver"]
    assert len(solvers) == 2 and all(solver.value == "midpoint" for solver in solvers)


def test_a_request_without_settings_takes_the_checkpoint_default(checkpoint, rgba_image, tmp_path):
    from translate_app.app import _Handlers

    from translate import Translator

    handlers = _Handlers(Translator.from_pretrained(checkpoint, device="cpu"), tmp_path, 1, 16)
    image, strip, _ = handlers.translate_one(str(rgba_image), "a2b", None, None, 1.0)
    assert len(strip) == 4  # the source and the checkpoint's 3 steps
    for steps in (None, 0):  # 0: the page's and an API call's default
        _, strip, _ = handlers.translate_one(str(rgba_image), "b2a", steps, None, 1.0)
        assert len(strip) == 6  # B -> A: its own 5
        gallery, _, _ = handlers.translate_batch([str(rgba_image)], "a2b", steps, None)
        assert len(gallery) == 1
    named, _, _ = handlers.translate_one(str(rgba_image), "a2b", 3, "midpoint", 1.0)
    assert image.tobytes() == named.tobytes()  # and its solver


@pytest.mark.parametrize("direction", ["circles → squares", "squares → circles", "b2a"])
def test_translation_keeps_the_input_size_and_alpha(client, rgba_image, direction):
    output, frames, gif = _translate(client, rgba_image, direction, steps=4)
    with Image.open(output) as out:
        assert out.size == (50, 30)
        assert out.mode == "RGBA"  # the input's transparency is re-attached
        assert out.getpixel((0, 0))[3] == 0 and out.getpixel((25, 15))[3] == 255
    first = "t = 0.00" if direction.startswith("circles") else "t = 1.00"
    assert frames[0]["caption"] == first
    assert len(frames) == 5
    with Image.open(gif) as animation:
        assert animation.n_frames == 5 and animation.size == (50, 30)


def test_solvers_and_strength(client, rgba_image):
    _, frames, _ = _translate(client, rgba_image, steps=2, solver="dopri5", strength=0.5)
    assert [f["caption"] for f in frames] == ["t = 0.00", "t = 0.25", "t = 0.50"]
    _, frames, _ = _translate(client, rgba_image, "squares → circles", 2, "midpoint", 0.5)
    assert [f["caption"] for f in frames] == ["t = 1.00", "t = 0.75", "t = 0.50"]


def _bad_uploads(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    good = folder / "good.png"
    picture = Image.new("RGB", (40, 40), "blue")
    picture.paste((250, 200, 0), (8, 8, 30, 24))  # a shape: one flat colour is refused
    picture.save(good)
    data = good.read_bytes()
    files = {
        "text.png": b"this is not an image",
        "empty.png": b"",
        "truncated.png": data[: len(data) // 2],
        "garbage.jpg": bytes(range(256)) * 8,
        "html.png": b"<html><script>alert(1)</script></html>",
    }
    paths = {}
    for name, content in files.items():
        (folder / name).write_bytes(content)
        paths[name] = folder / name
    Image.new("RGB", (40, 40), "blue").save(folder / "flat.png")
    paths["flat.png"] = folder / "flat.png"
    big = Image.frombytes("RGB", (700, 700), np.random.default_rng(0).bytes(700 * 700 * 3))
    big.save(folder / "too-large.bmp")  # 1.4 MB, over the 1 MB limit
    paths["too-large.bmp"] = folder / "too-large.bmp"
    return paths


def test_bad_uploads_get_a_short_error_and_the_server_keeps_serving(client, tmp_path):
    for name, path in _bad_uploads(tmp_path).items():
        with pytest.raises(Exception) as caught:  # gradio_client raises AppError or HTTP errors
            _translate(client, path)
        message = str(caught.value)
        assert "Traceback" not in message, name
        assert len(message.splitlines()) <= 2, (name, message)
    for settings in ({"steps": -1}, {"strength": 0.0}, {"solver": "magic"}, {"direction": "up"}):
        with pytest.raises(Exception, match="must"):
            _translate(client, tmp_path / "good.png", **settings)
    output, _, _ = _translate(client, tmp_path / "good.png")
    assert Image.open(output).size == (40, 40)


def test_error_messages_name_the_problem(client, tmp_path):
    paths = _bad_uploads(tmp_path)
    expected = {
        "text.png": "not an image",
        "empty.png": "empty",
        "truncated.png": "truncated",
        "flat.png": "one flat colour",
    }
    for name, words in expected.items():
        with pytest.raises(Exception, match=words):
            _translate(client, paths[name])


def test_every_corpus_file_translates_or_fails_cleanly(client, tmp_path):
    """The folder converter's corpus of good, bad and odd files, sent as uploads."""
    from corpus import make_corpus

    good, bad = make_corpus(tmp_path)
    for rel, size in good.items():
        path = tmp_path / rel
        if path.stat().st_size > MAX_MB * 2**20:  # the upload limit refuses it
            with pytest.raises(Exception, match="limit|too large|exceed"):
                _translate(client, path)
            continue
        output, _, _ = _translate(client, path)
        assert Image.open(output).size == size, rel
    for rel in bad:
        with pytest.raises(Exception) as caught:
            _translate(client, tmp_path / rel)
        assert "Traceback" not in str(caught.value), rel
    output, _, _ = _translate(client, tmp_path / "square.png")
    assert Image.open(output).size == (32, 32)


def test_batch_gives_a_gallery_a_zip_and_a_report(client, rgba_image, tmp_path):
    bad = _bad_uploads(tmp_path)
    uploads = [rgba_image, tmp_path / "good.png", bad["text.png"]]
    gallery, archive, report = client.predict(
        [handle_file(str(p)) for p in uploads],
        "squares → circles",
        2,
        "euler",
        api_name="/translate_batch",
    )
    assert [item["caption"] for item in gallery] == [rgba_image.name, "good.png"]
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == sorted([f"{rgba_image.stem}.png", "good.png"])
    assert "Translated 2 of 3" in report and "text.png" in report and "not an image" in report


@pytest.fixture(scope="module")
def guided_server(tmp_path_factory, tiny_vae):
    """A checkpoint with an autoguidance guide (A -> B weight 2, B -> A 1), served."""
    from helpers import tiny_translator

    path = tmp_path_factory.mktemp("app-guided") / "checkpoint"
    tiny_translator(tiny_vae, "circles", "squares", guidance=2.0).save_pretrained(path)
    port = _free_port()
    demo = launch(parse_args(["--checkpoint", str(path), "--port", str(port)]), block=False)
    yield demo, f"http://127.0.0.1:{port}/", path
    demo.close()


def _labelled(demo, label: str) -> list:
    return [block for block in demo.blocks.values() if getattr(block, "label", None) == label]


def test_a_guided_checkpoint_gets_a_guidance_slider_per_tab(
    server, guided_server, rgba_image, tmp_path
):
    from translate_app.app import _Handlers

    from translate import Translator, serving

    assert _labelled(server[0], "Guidance") == []  # no guide, no slider
    demo, url, path = guided_server
    sliders = _labelled(demo, "Guidance")
    assert len(sliders) == 2 and all(slider.value == 2.0 for slider in sliders)
    boxes = _labelled(demo, "The checkpoint's guidance")
    assert len(boxes) == 2 and all(box.value is True for box in boxes)
    handlers = _Handlers(Translator.from_pretrained(path, device="cpu"), tmp_path, 1, 16)
    # the slider follows the direction: the checkpoint's weight for the chosen one
    followers = [
        f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "default_guidance"
    ]
    assert len(followers) == 2
    assert [handlers.default_guidance(label) for label in handlers.labels] == [2.0, 1.0]

    client = Client(url, verbose=False)
    outputs = {}
    for weight in (1.0, 2.0):
        output, _, _ = client.predict(
            handle_file(str(rgba_image)),
            "circles → squares",
            2,
            "euler",
            1.0,
            False,  # not the checkpoint's guidance: this weight
            weight,
            api_name="/translate",
        )
        expected = serving.translate_upload(
            handlers.translator, rgba_image, "a2b", 2, "euler", guidance=weight
        ).image
        with Image.open(output) as out:
            assert out.tobytes() == expected.tobytes()  # the page's weight is the one used
            outputs[weight] = out.tobytes()
    assert outputs[1.0] != outputs[2.0]
    gallery, _, _ = client.predict(
        [handle_file(str(rgba_image))],
        "circles → squares",
        2,
        "euler",
        False,
        2.0,
        api_name="/translate_batch",
    )
    with Image.open(gallery[0]["image"]) as out:
        assert out.tobytes() == outputs[2.0]
    # a call that leaves the guidance out gets the checkpoint's weight for its direction (B -> A:
    # 1), not the slider's starting value (A -> B's 2)
    for api, first in (("/translate", handle_file(str(rgba_image))), ("/translate_batch", None)):
        args = [first or [handle_file(str(rgba_image))], "squares → circles", 2, "euler"]
        result = client.predict(*args, *([1.0] if api == "/translate" else []), api_name=api)
        image = result[0] if api == "/translate" else result[0][0]["image"]
        expected = serving.translate_upload(handlers.translator, rgba_image, "b2a", 2, "euler")
        with Image.open(image) as out:
            assert out.tobytes() == expected.image.tobytes(), api
    with pytest.raises(Exception, match="guidance must be in"):
        client.predict(
            handle_file(str(rgba_image)),
            "circles → squares",
            2,
            "euler",
            1.0,
            False,
            11.0,
            api_name="/translate",
        )


def test_missing_checkpoint_refuses_to_start(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "app" / "app.py"), "--checkpoint", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: checkpoint not found: {tmp_path / 'nope'}"
    ]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    if executable is None:
        if os.environ.get("TRANSLATE_REQUIRE_BROWSER"):
            pytest.fail("no system Chromium found (apt-get install chromium)")
        pytest.skip("no system Chromium (apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


VIEWPORTS = {"laptop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.mark.parametrize("name", VIEWPORTS)
def test_real_browser_upload_translate_screenshot(server, browser, rgba_image, name):
    _, url = server
    page = browser.new_page(viewport=VIEWPORTS[name])
    page.goto(url)
    page.get_by_text("circles ↔ squares").first.wait_for()
    page.locator("#input-image input[type=file]").set_input_files(str(rgba_image))
    page.locator("#input-image img").first.wait_for()
    page.get_by_label("squares → circles").first.check()
    page.locator("#translate-button").click()
    output = page.locator("#output-image img").first
    output.wait_for(timeout=60_000)
    page.locator("#trajectory img").first.wait_for()
    assert output.get_attribute("src")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"app-{name}.png"), full_page=True)
    assert page.locator("text=Traceback").count() == 0
    page.close()


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 127.0.0.1)" in text and "(default: 16.0)" in text
