"""The content term: a patch-wise contrastive loss between a translation and its source.

A translation should keep what its source shows where the source shows it, while its style
changes. PatchNCE (Park et al., *Contrastive Learning for Unpaired Image-to-Image Translation*,
ECCV 2020, eqs. 2-3; the regulariser UNSB adds, Kim et al., ICLR 2024) asks that a patch
of the translation be more like the source's patch at the same place than like the source's
patches anywhere else, in a learned feature space:

    l(q, k+, k-) = -log( exp(q.k+ / T) / (exp(q.k+ / T) + sum_n exp(q.k-_n / T)) )

with q, k L2-normalised features of the translation's and the source's patch, T the
temperature, the source's features detached (the keys), and the loss averaged over sampled
locations, layers and images. Here the features are those of a small convolutional net on
latents, shared by both domains and trained by the same loss as the field (as CUT trains its
projection heads), with one MLP head per layer.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from translate.adversarial import average_gradients
from translate.runs import load_module_state, save_module_state


class PatchFeatures(nn.Module):
    """Latents (batch, C, h, w) -> per-location features of three layers, each
    (batch, h * w, dim), L2-normalised along the last axis.

    The layers are the latent itself, one 3 x 3 convolution (a patch of 3 x 3 latent cells)
    and a second one (5 x 5 cells); each passes through its own two-layer MLP head to ``dim``.
    """

    def __init__(self, channels: int, width: int = 64, dim: int = 64) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(channels, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)]
        )
        sizes = (channels, width, width)
        self.heads = nn.ModuleList(
            [nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) for c in sizes]
        )

    def forward(self, latents: torch.Tensor) -> list[torch.Tensor]:
        maps, x = [latents.float()], latents.float()
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            maps.append(x)
        return [
            F.normalize(head(m.flatten(2).transpose(1, 2)), dim=-1)
            for head, m in zip(self.heads, maps, strict=True)
        ]


def patch_nce(
    queries: torch.Tensor, keys: torch.Tensor, locations: torch.Tensor, temperature: float
) -> torch.Tensor:
    """PatchNCE at ``locations`` (P,) of features (batch, h * w, dim): a scalar.

    Row p of image i is the query; the key at the same location is its positive, the keys at
    the other P - 1 sampled locations of the same image its negatives (CUT's default: negatives
    from the image itself, not the batch). ``keys`` are detached.
    """
    q = queries[:, locations]  # (batch, P, dim)
    k = keys[:, locations].detach()
    logits = q @ k.transpose(1, 2) / temperature  # (batch, P, P); the diagonal is positive
    target = torch.arange(len(locations), device=q.device).expand(len(q), -1)
    return F.cross_entropy(logits.flatten(0, 1), target.flatten())


def transport_cost(translations: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between translations and their sources, both (batch, C, h, w), in
    squared latent units per element: a scalar, with gradient to both.

    The quadratic transport cost tau * |z_A - z_B_hat|^2 that UNSB adds to its adversarial term
    (Kim et al., ICLR 2024: the transport cost of its Schrodinger-bridge loss), here from
    the source to the predicted endpoint.
    """
    return (translations.float() - sources.float()).pow(2).flatten(1).mean(1).mean()


class ContentTerm:
    """The feature net, its optimizer and the PatchNCE loss, for the training loop.

    The net is not wrapped for data parallelism: ``step`` averages its gradients over
    processes with the ``reduce`` function it is given (e.g. ``accelerator.reduce``), so every
    process holds the same weights. ``save``/``load`` write safetensors weights and the
    optimizer state (loaded with ``torch.load(weights_only=True)``).
    """

    WEIGHTS, OPTIMIZER = "features.safetensors", "optimizer.bin"

    def __init__(
        self,
        channels: int,
        patches: int,
        temperature: float,
        lr: float,
        device,
        seed: int,
    ) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = PatchFeatures(channels).to(device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=lr, betas=(0.5, 0.99))
        self.patches, self.temperature = patches, temperature

    def loss(
        self, translations: torch.Tensor, sources: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """PatchNCE between translations and their sources, both (batch, C, h, w): a scalar,
        averaged over the three layers. ``patches`` locations (all, if there are fewer) are
        drawn from ``generator``, the same for every image and layer."""
        queries, keys = self.net(translations), self.net(sources)
        cells = queries[0].shape[1]
        order = torch.randperm(cells, generator=generator, device=generator.device)
        locations = order[: min(self.patches, cells)].to(translations.device)
        pairs = zip(queries, keys, strict=True)
        layers = [patch_nce(q, k, locations, self.temperature) for q, k in pairs]
        return torch.stack(layers).mean()

    def step(self, reduce=None) -> None:
        """One optimizer step on the gradients the field's backward left in the net."""
        average_gradients(self.net, reduce)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, folder: Path) -> None:
        save_module_state(folder, self.net, self.optimizer, self.WEIGHTS, self.OPTIMIZER)

    def load(self, folder: Path) -> None:
        """Restore from ``save``'s folder; raises FileNotFoundError when a file is missing."""
        load_module_state(folder, self.net, self.optimizer, self.WEIGHTS, self.OPTIMIZER)
