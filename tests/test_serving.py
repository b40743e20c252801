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
