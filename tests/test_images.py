import numpy as np
import pytest
import torch
from PIL import Image

from translate.images import load_rgb, resize_center_crop, scan_images, to_pil, to_rgb, to_tensor


def _transparent_red(mode):
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    return image.convert(mode) if mode != "RGBA" else image


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_white(mode):
    rgb = to_rgb(_transparent_red(mode))
    assert rgb.mode == "RGB" and rgb.getpixel((3, 3)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) != (255, 255, 255)


def test_palette_with_transparency():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    image.info["transparency"] = 0
    rgb = to_rgb(image)
    assert rgb.getpixel((3, 3)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (255, 0, 0)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    array = np.full((4, 4), 32768, dtype=np.uint16)
    rgb = to_rgb(Image.fromarray(array))
    assert rgb.getpixel((0, 0)) == (127, 127, 127)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "1", "I", "F"])
def test_other_modes_become_rgb(mode):
    assert to_rgb(Image.new("RGB", (3, 3), (10, 20, 30)).convert(mode)).mode == "RGB"


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (4, 2), "white")
    image.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=100)
    loaded = load_rgb(path)
    assert loaded.size == (2, 4)


def test_resize_center_crop_shapes():
    image = Image.new("RGB", (300, 200))
    assert resize_center_crop(image, 64).size == (64, 64)
    assert resize_center_crop(Image.new("RGB", (178, 218)), 32, crop=140).size == (32, 32)


def test_tensor_round_trip():
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    x = to_tensor([image])
    assert x.shape == (1, 3, 4, 4) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(np.asarray(to_pil(x)[0]), np.asarray(image))


def test_scan_images_is_recursive_and_filters(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["x.png", "a/y.JPG", "a/b/z.webp", "notes.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in scan_images(tmp_path).files] == [
        "z.webp",
        "y.JPG",
        "x.png",
    ]  # sorted by path


def test_scan_follows_folder_links_once_and_reports_broken_ones(tmp_path):
    root, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    (root / "real").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "real" / "a.png").write_bytes(b"")
    (elsewhere / "b.png").write_bytes(b"")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "real" / "up").symlink_to(root, target_is_directory=True)  # a loop
    (root / "broken.png").symlink_to(tmp_path / "missing.png")
    scan = scan_images(root)
    assert scan.files == [root / "linked" / "b.png", root / "real" / "a.png"]
    assert scan.broken_links == [root / "broken.png"]


def test_float_images_in_unit_range_are_scaled_not_blackened(tmp_path):
    values = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    path = tmp_path / "unit.tif"
    Image.fromarray(values, mode="F").save(path)
    rgb = load_rgb(path)
    assert rgb.getpixel((3, 3)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (0, 0, 0)
    assert rgb.getpixel((1, 2))[0] == round(9 / 15 * 255)
    eight_bit = to_rgb(Image.fromarray(values * 200, mode="F"))  # values beyond 1: 8-bit scale
    assert eight_bit.getpixel((3, 3)) == (200, 200, 200)


def _swapped_primaries_profile() -> bytes:
    """An RGB ICC profile whose red and blue primaries are sRGB's swapped: not sRGB."""
    import struct

    from PIL import ImageCms

    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    entries = {}
    for i in range(struct.unpack(">I", icc[128:132])[0]):
        entries[bytes(icc[132 + 12 * i : 136 + 12 * i])] = 136 + 12 * i  # offset, size
    red, blue = entries[b"rXYZ"], entries[b"bXYZ"]
    icc[red : red + 8], icc[blue : blue + 8] = icc[blue : blue + 8], icc[red : red + 8]
    icc[84:100] = bytes(16)  # no profile ID to check
    return bytes(icc)


def test_an_icc_tagged_image_is_one_tensor_in_training_and_in_the_translator(tmp_path, tiny_vae):
    from helpers import tiny_translator

    from translate.autoencoder import _load_pixels
    from translate.evaluate import load_images
    from translate.latent_cache import _ImageFiles

    pixels = np.zeros((24, 20, 3), np.uint8)
    pixels[..., 0], pixels[:, :10, 2] = 200, 60  # red, a little blue on the left
    path = tmp_path / "tagged.png"
    Image.fromarray(pixels).save(path, icc_profile=_swapped_primaries_profile())
    translator = tiny_translator(tiny_vae)  # 16 px
    inference = translator.preprocess([path])[0]
    _, training, _ = _ImageFiles([path], 16, None, False)[0]  # the latent cache's loader
    assert torch.equal(training, inference)
    assert torch.equal(load_images([path], 16, None).pixels[0], inference)  # evaluation
    stage1 = _load_pixels([path], 16, None, "vae")[0].float().div(127.5).sub(1)  # the own VAE
    assert torch.equal(stage1, inference)
    with Image.open(path) as opened:  # an opened image, as the Python API takes it
        assert torch.equal(translator.preprocess([opened])[0], inference)
    red, _, blue = inference.mean(dim=(1, 2)).tolist()
    assert blue > red  # the profile was applied: its "red" is sRGB blue
