"""Probe: does a decoder fine-tuned with a pixel GAN sharpen a checkpoint's translations?

    python benchmarks/decoder_gan.py --checkpoint runs/emoji/checkpoint-final \
        --data .cache/translate/emoji-om17.0.0-tw2.0.0-v2 --names OpenMoji,Twemoji \
        --steps 400 --weight 0.1 --to runs/exp-decoder-gan/checkpoint-final
    translate-eval runs/exp-decoder-gan/checkpoint-final --steps 1,4,8 --out eval/decoder-gan

The encoder is frozen, so the latent space, and with it the trained velocity field, stays
valid; only the decoder (and its ``post_quant_conv``) learns, from the training images of both
domains (``--data``: a CycleGAN-layout folder with ``train<A>``/``train<B>``), with

    L_dec = |decode(z) - x|_1 + w * softplus(-D(decode(z)))          (L1 + non-saturating GAN)
    L_D   = softplus(-D(x)) + softplus(D(decode(z))) + gamma/2 |grad_x D(x)|^2    (R1)

where z is the encoder's posterior mean, plus ``--latent-noise`` x its std of Gaussian noise
(so that the decoder also learns to render latents off the data, as a flow's are), and D is
``translate.adversarial.PixelPatchDiscriminator``. This is how latent diffusion's autoencoders
sharpen their decoders (Esser et al., CVPR 2021; Rombach et al., CVPR 2022), as a second stage
here. The copy written to ``--to`` is the checkpoint with the new decoder; the JSON
holds the training curve. Hypothesis and measured result: docs/SHARPNESS.md ("A decoder
fine-tuned with a pixel GAN").
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine, write_json

from translate import Translator
from translate.adversarial import PixelPatchDiscriminator
from translate.autoencoder import _as_float, _load_pixels, psnr
from translate.data import folder_source


def fine_tune(vae, pixels: torch.Tensor, args: argparse.Namespace) -> list[dict]:
    """Train the decoder of ``vae`` in place on uint8 ``pixels`` (N, 3, H, W); the log rows."""
    vae.requires_grad_(False)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in params:
        p.requires_grad_(True)
    torch.manual_seed(args.seed)
    disc = PixelPatchDiscriminator(3, args.width)
    opt_g = torch.optim.AdamW(params, lr=args.lr, betas=(0.5, 0.9), weight_decay=0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=2 * args.lr, betas=(0.5, 0.9), weight_decay=0)
    generator = torch.Generator().manual_seed(args.seed)
    rows, start = [], time.perf_counter()
    for step in range(args.steps):
        x = _as_float(pixels[torch.randint(len(pixels), (args.batch,), generator=generator)])
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
            if args.latent_noise:
                z = z + args.latent_noise * z.std() * torch.randn(z.shape, generator=generator)
        recon = vae.decode(z).sample.float()
        l1 = F.l1_loss(recon, x)
        gen = F.softplus(-disc(recon)).mean() if args.weight else torch.zeros(())
        opt_g.zero_grad()
        (l1 + args.weight * gen).backward()
        opt_g.step()
        if args.weight:
            real = x.requires_grad_(True)
            logits_real, logits_fake = disc(real), disc(recon.detach())
            (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            loss_d = (
                F.softplus(-logits_real).mean()
                + F.softplus(logits_fake).mean()
                + args.r1_gamma / 2 * r1
            )
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        if step % 50 == 0 or step == args.steps - 1:
            rows.append(
                {
                    "step": step,
                    "l1": l1.item(),
                    "generator": gen.item(),
                    "psnr": psnr(recon.detach(), x).mean().item(),
                    "seconds": time.perf_counter() - start,
                }
            )
            print(rows[-1], flush=True)
    vae.requires_grad_(False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="folder with train<A> and train<B>")
    parser.add_argument("--names", default="A,B", help="the two domain folder names")
    parser.add_argument("--to", required=True, help="where the checkpoint copy is written")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight", type=float, default=0.1, help="GAN weight w; 0: L1 only")
    parser.add_argument("--latent-noise", type=float, default=0.0)
    parser.add_argument("--r1-gamma", type=float, default=0.05)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/decoder_gan.json")
    args = parser.parse_args()

    translator = Translator.from_pretrained(args.checkpoint, device="cpu", vae_dtype="float32")
    name_a, name_b = args.names.split(",")
    train_a, train_b = folder_source(Path(args.data), name_a, name_b).split("train")
    pixels = _load_pixels(train_a + train_b, translator.resolution, None, "training images")
    rows = fine_tune(translator.codec.vae, pixels, args)
    shutil.rmtree(args.to, ignore_errors=True)
    translator.save_pretrained(args.to)
    payload = {"machine": machine(torch.device("cpu")), "args": vars(args), "rows": rows}
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
