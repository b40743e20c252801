"""Run under torchrun with 2 processes: global-scope pairing must be one plan on every rank."""

import json
import sys

import torch
from accelerate import Accelerator

from translate.coupling import ExactOTCoupler, GlobalCoupler

accelerator = Accelerator(cpu=True)
rank, world = accelerator.process_index, accelerator.num_processes
g = torch.Generator().manual_seed(100 + rank)  # each rank draws different batches
x0, x1 = torch.randn(8, 4, 2, 2, generator=g), torch.randn(8, 4, 2, 2, generator=g) + 0.5
coupler = GlobalCoupler(ExactOTCoupler(), accelerator.gather, rank, world)
mine = coupler(x0, x1, torch.Generator().manual_seed(0))
# the union of every rank's slice, gathered back
union0, union1 = accelerator.gather(mine.x0), accelerator.gather(mine.x1)
# what one process would compute from all batches
full = ExactOTCoupler()(accelerator.gather(x0), accelerator.gather(x1), torch.Generator())
ok = torch.equal(union0, full.x0) and torch.equal(union1, full.x1)
flags = accelerator.gather(torch.tensor([float(ok)]))
if accelerator.is_main_process:
    out = {"world": world, "all_ok": bool(flags.min().item() == 1.0), "ratio": mine.cost_ratio}
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
accelerator.wait_for_everyone()
accelerator.end_training()  # destroy the process group before exiting
