"""Names the app writes from what clients send."""

from translate.serving import output_names


def test_client_names_are_never_paths_and_outputs_never_collide():
    names = ["..\\..\\x.png", "C:\\x\\y.png", "../../etc/z.jpg", ".hidden.png", "a.png", "a.jpg"]
    names += ["a-1.png", "A.png", ""]
    result = output_names(names)
    assert result == [
        "x.png", "y.png", "z.png", "hidden.png", "a.png", "a-1.png", "a-1-1.png", "A-2.png",
        "image.png",
    ]  # fmt: skip
    assert len({n.lower() for n in result}) == len(result)
    assert not any(sep in n for n in result for sep in ("/", "\\", ":"))


def test_pixel_limit_refuses_a_small_file_with_a_huge_picture(tmp_path):
    import pytest
    from PIL import Image

    from translate.serving import open_upload, preview

    path = tmp_path / "dot.png"
    picture = Image.new("RGB", (5000, 4000), "white")
    picture.putpixel((7, 7), (0, 0, 0))  # not one flat colour, which is refused on its own
    picture.save(path)  # a few kB, 20 megapixels
    assert path.stat().st_size < 200_000
    with pytest.raises(ValueError, match=r"5000×4000 px \(20.0 megapixels\); the limit is 16"):
        open_upload(path)
    assert open_upload(path, max_megapixels=25).rgb.size == (5000, 4000)
    assert preview(Image.new("RGB", (5000, 4000))).size == (512, 410)


def _noise(path, seed):
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_flat_uploads_and_non_finite_outputs_are_refused_never_translated(tiny_vae, tmp_path):
    import pytest
    import torch
    from helpers import tiny_translator
    from PIL import Image

    from translate.images import FLAT
    from translate.serving import open_upload, translate_many, translate_upload

    flat = tmp_path / "flat.png"
    Image.new("RGB", (20, 20), (40, 90, 200)).save(flat)
    with pytest.raises(ValueError, match=FLAT):
        open_upload(flat)
    translator = tiny_translator(tiny_vae)
    good = [_noise(tmp_path / f"{i}.png", i) for i in range(2)]
    results, failed = translate_many(translator, [good[0], flat, good[1]], steps=1)
    assert [name for name, _ in results] == ["0.png", "1.png"]
    assert failed == [("flat.png", FLAT)]
    with torch.no_grad():  # a diverged checkpoint: its weights hold NaN
        next(translator.unet.parameters()).fill_(float("nan"))
    results, failed = translate_many(translator, good, steps=1)
    assert results == [] and [name for name, _ in failed] == ["0.png", "1.png"]
    assert all("not finite" in reason for _, reason in failed)
    with pytest.raises(ValueError, match="not finite"):
        translate_upload(translator, good[0], steps=1)


def test_a_source_noised_model_takes_a_seed_in_every_entry_point(tiny_vae, tmp_path):
    import pytest
    from helpers import tiny_translator

    from app.app import _seed, build_demo
    from translate.cli import convert_main
    from translate.serving import translate_many, translate_upload

    translator = tiny_translator(tiny_vae, source_noise=0.5)
    (tmp_path / "in").mkdir()
    image = _noise(tmp_path / "in" / "0.png", 0)

    def png(result):
        return result.image.tobytes()

    first = png(translate_upload(translator, image, steps=2, seed=0))
    assert first == png(translate_upload(translator, image, steps=2, seed=0))
    assert first != png(translate_upload(translator, image, steps=2, seed=1))
    results, failed = translate_many(translator, [image], steps=2, seed=0)
    assert failed == [] and results[0][1].tobytes() == first
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        translate_upload(translator, image, steps=2, seed=-1)
    # translate-folder --seed
    translator.save_pretrained(tmp_path / "ckpt")
    outputs = {}
    for seed in ("0", "0", "1"):
        out = tmp_path / f"out-{len(outputs)}"
        argv = [str(tmp_path / "ckpt"), str(tmp_path / "in"), str(out), "--steps", "2"]
        assert convert_main([*argv, "--seed", seed]) == 0
        outputs[len(outputs)] = (out / "0.png").read_bytes()
    assert outputs[0] == outputs[1] != outputs[2]
    # the app: a seed field for this model only, and whole numbers only
    seeded = build_demo(translator, tmp_path / "app")
    plain = build_demo(tiny_translator(tiny_vae), tmp_path / "app-plain")
    ids = [
        [c.get("props", {}).get("elem_id") for c in demo.config["components"]]
        for demo in (seeded, plain)
    ]
    assert "seed" in ids[0] and "seed" not in ids[1]
    assert _seed(3.0) == 3
    for bad in (0.5, float("inf"), "x", None):
        with pytest.raises(ValueError, match="seed"):
            _seed(bad)
