import os

import pytest
import torch
from diffusers import AutoencoderTiny

from translate import latent_cache as latents_module
from translate.codec import LatentCodec
from translate.errors import TranslateError
from translate.images import scan_images
from translate.latent_cache import EncodeSpec, cached_colours, cached_latents, load_latent_file


@pytest.fixture
def codec(tiny_vae):
    return LatentCodec.from_pretrained(tiny_vae)


def test_codec_applies_scale_and_shift(tiny_vae):
    codec = LatentCodec.from_pretrained(tiny_vae)
    codec.vae.register_to_config(scaling_factor=2.0, shift_factor=0.5)
    codec = LatentCodec(codec.vae, str(tiny_vae))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    raw = codec.vae.encode(x).latent_dist.mean
    z = codec.encode(x)
    torch.testing.assert_close(z, (raw - 0.5) * 2.0)
    assert z.shape == (2, 4, 8, 8) and codec.downsample_factor == 2
    torch.testing.assert_close(codec.decode(z), codec.vae.decode(raw).sample.clamp(-1, 1))
    assert len(codec.decode_images(z)) == 2


def test_fingerprint_follows_the_weights_not_the_folder(tiny_vae, tmp_path):
    import shutil

    codec = LatentCodec.from_pretrained(tiny_vae)
    copy = LatentCodec.from_pretrained(shutil.copytree(tiny_vae, tmp_path / "elsewhere"))
    assert len(codec.fingerprint()) == 12
    assert copy.fingerprint() == codec.fingerprint()  # the same weights in another folder
    with torch.no_grad():
        next(copy.vae.parameters()).view(-1)[0] += 1e-3  # one weight of one layer
    assert copy.fingerprint() != codec.fingerprint()
    scaled = LatentCodec.from_pretrained(tiny_vae)
    scaled.vae.register_to_config(scaling_factor=2.0)  # the latents' normalisation
    assert LatentCodec(scaled.vae, str(tiny_vae)).fingerprint() != codec.fingerprint()
    halved = LatentCodec.from_pretrained(tiny_vae)
    halved.to_dtype(torch.bfloat16)  # encodes differently: another codec
    assert halved.fingerprint() != codec.fingerprint()


def test_tiny_autoencoder_and_subfolder(tmp_path):
    tiny = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        upsampling_scaling_factor=2,
        latent_channels=4,
    )
    tiny.save_pretrained(str(tmp_path / "pipe" / "vae"))
    codec = LatentCodec.from_pretrained(tmp_path / "pipe", subfolder="vae")
    z = codec.encode(torch.zeros(1, 3, 16, 16))
    assert z.shape == (1, 4, 8, 8) and codec.downsample_factor == 2
    assert codec.decode(z).shape == (1, 3, 16, 16)


def test_an_unreachable_hub_says_so_at_once_and_offers_the_ways_out(monkeypatch):
    import socket

    from translate import codec as latents

    attempts = []

    def no_network(self, address):
        attempts.append(address)
        raise OSError("network is unreachable")

    monkeypatch.setattr(latents, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(TranslateError, match="Hugging Face Hub cannot be reached") as err:
        LatentCodec.from_pretrained("some-org/some-vae-that-is-not-cached")
    assert "vae.pretrained=PATH" in str(err.value) and "vae.pretrained=null" in str(err.value)
    assert "\n" not in str(err.value)
    assert attempts == []  # the local hub cache only: no download and no retries


def test_missing_vae_is_one_line(tmp_path):
    with pytest.raises(TranslateError, match="cannot load VAE from") as err:
        LatentCodec.from_pretrained(tmp_path / "nothing-here")
    assert "\n" not in str(err.value)


def test_cache_hit_miss_and_invalidation(codec, folders, tmp_path, monkeypatch):
    files = scan_images(folders / "trainA").files
    calls = []
    real = latents_module.encode_files
    monkeypatch.setattr(
        latents_module, "encode_files", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    first = cached_latents(tmp_path, codec, files, EncodeSpec(16))
    second = cached_latents(tmp_path, codec, files, EncodeSpec(16))
    assert len(calls) == 1 and torch.equal(first.latents, second.latents)
    assert first.latents.shape == (12, 4, 8, 8) and first.names[0] == "trainA/000.png"
    cached_latents(tmp_path, codec, files, EncodeSpec(16, flip=True))  # other preprocessing: miss
    assert len(calls) == 2
    os.utime(files[0], ns=(1, 1))  # a touched file: miss
    cached_latents(tmp_path, codec, files, EncodeSpec(16))
    assert len(calls) == 3
    flipped = cached_latents(tmp_path, codec, files, EncodeSpec(16, flip=True))
    assert len(flipped.names) == 24 and flipped.names[12].endswith("#flip")


def test_cache_is_never_half_written(codec, folders, tmp_path, monkeypatch):
    files = scan_images(folders / "trainA").files

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(latents_module, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        cached_latents(tmp_path, codec, files, EncodeSpec(16))
    assert not list((tmp_path / "latents").glob("*.safetensors"))


def test_corrupt_images_are_skipped_and_reported(codec, folders, tmp_path):
    (folders / "trainA" / "broken.png").write_bytes(b"\x89PNG not really")
    (folders / "trainA" / "empty.jpg").write_bytes(b"")
    result = cached_latents(tmp_path, codec, scan_images(folders / "trainA").files, EncodeSpec(16))
    assert len(result.names) == 12 and len(result.failures) == 2
    assert any("broken.png" in f for f in result.failures)
    reloaded = load_latent_file(next((tmp_path / "latents").glob("*.safetensors")))
    assert reloaded.failures == result.failures


def test_all_unreadable_is_an_error(codec, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(TranslateError, match="could be read"):
        cached_latents(tmp_path, codec, [bad], EncodeSpec(16))


def test_colour_histograms_are_cached_row_for_row_with_the_latents(
    codec, folders, tmp_path, monkeypatch
):
    (folders / "trainA" / "broken.png").write_bytes(b"\x89PNG not really")
    files = scan_images(folders / "trainA").files
    spec = EncodeSpec(16, flip=True)
    calls = []
    real = latents_module.colour_histograms
    monkeypatch.setattr(latents_module, "colour_histograms", lambda *a: calls.append(1) or real(*a))
    latents = cached_latents(tmp_path, codec, files, spec)
    names = latents.names[::-1]  # any order of the latent rows
    colours = cached_colours(tmp_path, codec, files, spec, names, bins=4)
    assert colours.shape == (24, 64)  # 12 readable images and their flipped copies
    from translate.evaluate import load_images

    pixels = load_images([folders / "trainA" / "003.png"], 16, None).pixels
    row = names.index("trainA/003.png")
    torch.testing.assert_close(colours[row], real(pixels, 4)[0], atol=1e-3, rtol=0)
    flipped = names.index("trainA/003.png#flip")
    torch.testing.assert_close(colours[flipped], colours[row])
    count = len(calls)
    again = cached_colours(tmp_path, codec, files, spec, names, bins=4)  # a hit
    assert len(calls) == count and torch.equal(again, colours)
    cached_colours(tmp_path, codec, files, spec, names, bins=5)  # another size: a miss
    assert len(calls) > count
    count = len(calls)
    other = EncodeSpec(20, flip=True)  # another resolution: other latents, another file
    other_names = cached_latents(tmp_path, codec, files, other).names
    assert cached_colours(tmp_path, codec, files, other, other_names, bins=4).shape == (24, 64)
    assert len(calls) > count
    # a damaged cache file is computed again, not an error
    for damaged in (tmp_path / "colours").glob("*.safetensors"):
        damaged.write_bytes(b"not a safetensors file")
    count = len(calls)
    torch.testing.assert_close(cached_colours(tmp_path, codec, files, spec, names, bins=4), colours)
    assert len(calls) > count


def test_a_colour_row_whose_file_can_no_longer_be_read_is_one_line(
    codec, folders, tmp_path, monkeypatch
):
    files = scan_images(folders / "trainA").files
    spec = EncodeSpec(16)
    names = cached_latents(tmp_path, codec, files, spec).names
    real = latents_module.load_rgb

    def unreadable(path):
        if path.name == "003.png":
            raise OSError("permission denied")
        return real(path)

    monkeypatch.setattr(latents_module, "load_rgb", unreadable)
    with pytest.raises(TranslateError, match="003.png: permission denied") as err:
        cached_colours(tmp_path, codec, files, spec, names, bins=4)
    assert "\n" not in str(err.value)
    with pytest.raises(TranslateError, match="no file of this data set"):
        cached_colours(tmp_path, codec, files, spec, [*names, "trainA/999.png"], bins=4)
