"""Train latents in memory or memory-mapped from the cache: the same batches either way."""

import pytest
import torch
from safetensors.torch import save_file

from translate.latent_cache import load_latent_file
from translate.latent_sampling import MEMORY_SHARE, LatentSampler, keep_in_memory


@pytest.fixture
def cache_file(tmp_path):
    latents = torch.randn(50, 4, 3, 3, generator=torch.Generator().manual_seed(0)).half()
    path = tmp_path / "latents.safetensors"
    save_file({"latents": latents}, str(path), metadata={"names": '["a"]', "failures": "[]"})
    return path, latents


def test_memory_map_reads_the_cache_values_without_loading_them(cache_file):
    path, latents = cache_file
    mapped = load_latent_file(path, mmap=True)
    assert mapped.latents.dtype == torch.float16 and mapped.names == ["a"]
    assert torch.equal(mapped.latents, latents)
    assert torch.equal(load_latent_file(path).latents, latents.float())
    before = path.read_bytes()
    mapped.latents[0] = 7  # copy-on-write: the cache file never changes
    assert path.read_bytes() == before


def test_sampler_draws_the_same_float32_batches_from_every_storage(cache_file):
    path, latents = cache_file
    storages = [
        latents.float(),  # the float32 tensor a cache hit used to give
        latents.clone(),  # float16 in memory
        load_latent_file(path, mmap=True).latents,  # float16 memory map
    ]
    batches = []
    for storage in storages:
        sampler, generator = LatentSampler(storage, "cpu"), torch.Generator().manual_seed(1)
        batches.append([sampler.draw(16, generator) for _ in range(4)])
    for other in batches[1:]:
        for want, got in zip(batches[0], other, strict=True):
            assert got.dtype == torch.float32 and torch.equal(got, want)


def test_auto_storage_keeps_latents_in_memory_only_when_they_fit():
    free = 1000
    assert keep_in_memory("auto", int(MEMORY_SHARE * free), free)
    assert not keep_in_memory("auto", int(MEMORY_SHARE * free) + 1, free)
    assert keep_in_memory("memory", 10 * free, free)
    assert not keep_in_memory("mmap", 1, free)
    with pytest.raises(ValueError, match="storage must be one of"):
        keep_in_memory("disk", 1, free)
