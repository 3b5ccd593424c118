"""Run under torchrun by tests/test_codec.py: ``musiclm train codec ARGS`` as a user would, with each rank
writing its codebooks at the end of training to OUT/quantizer_rank{N}.safetensors.

Usage: torchrun --nproc_per_node 2 tests/codec_ddp.py OUT train codec --out OUT ...
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

from musiclm.cli.main import main
from musiclm.training import engine

out = Path(sys.argv[1])
fit = engine.Trainer.fit


def fit_and_keep_codebooks(self: engine.Trainer):
    model = fit(self)
    state = {k: v.contiguous() for k, v in self.model.quantizer.state_dict().items()}
    save_file(state, str(out / f"quantizer_rank{self.dist.rank}.safetensors"))
    return model


if __name__ == "__main__":
    engine.Trainer.fit = fit_and_keep_codebooks  # observes the run; the training itself is the CLI's own
    sys.argv = ["musiclm", *sys.argv[2:]]
    main()
