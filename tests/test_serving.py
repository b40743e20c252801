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
