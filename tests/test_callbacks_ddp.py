"""GradSignCallback under DDP (2 CPU processes, gloo): every rank ends with the same scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys, torch, lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset
from gradsign_pl import GradSignCallback
from tests.models import TinyCNN

class M(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = TinyCNN(5, 3, 4)
    def forward(self, x):
        return self.net(x)
    def training_step(self, b, i):
        return torch.nn.functional.cross_entropy(self(b[0]), b[1])
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

class Report(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        cb = [c for c in trainer.callbacks if isinstance(c, GradSignCallback)][0]
        with open(f"{sys.argv[1]}/rank{trainer.global_rank}.json", "w") as f:
            json.dump(cb.scores, f)

if __name__ == "__main__":
    torch.manual_seed(0)
    ds = TensorDataset(torch.randn(32, 3, 8, 8), torch.randint(0, 5, (32,)))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, limit_train_batches=2,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[GradSignCallback(("gradsign", "synflow")), Report()],
                         default_root_dir=sys.argv[1])
    trainer.fit(M(), DataLoader(ds, batch_size=8))
"""


def test_ddp_ranks_agree_on_the_scores(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # One file per rank: the two processes' stdout can interleave mid-line.
    reports = {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    assert reports[0] == reports[1] and reports[0]["gradsign"] > 0
