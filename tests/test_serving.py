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

    path = tmp_path / "flat.png"
    Image.new("RGB", (5000, 4000), "white").save(path)  # a few kB, 20 megapixels
    assert path.stat().st_size < 200_000
    with pytest.raises(ValueError, match=r"5000×4000 px \(20.0 megapixels\); the limit is 16"):
        open_upload(path)
    assert open_upload(path, max_megapixels=25).rgb.size == (5000, 4000)
    assert preview(Image.new("RGB", (5000, 4000))).size == (512, 410)
