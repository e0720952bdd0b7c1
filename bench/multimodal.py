"""Two inputs against one: zoo:digits-qa and its towers each alone, trained on digits-qa.

digits-qa pairs each 8x8 digit with a question such as "plus three"; the answer is
(digit + 3) mod 10 (`archlab/data/_multimodal.py` says how it is built). Three models, each
trained by `archlab.fit` with zoo:digits-qa's own settings (10 epochs, AdamW lr 5e-3, cosine,
batch 64) unless --epochs says otherwise, and scored on the test split (1,436 rows: digits'
359 test images, 4 questions each, none seen in training):

  both       zoo:digits-qa: an MLP tower on the image, an embedding + mean-pool tower on the
             question, concatenated, an MLP head
  image      the image tower and the same head, reading the image only
  question   the question tower and the same head, reading the question only

Either input alone leaves the answer uniform over the ten classes, so the one-input models
should score chance (10%). Prints each model's test accuracy per seed, then the range.

    python bench/multimodal.py                  # seeds 0-4
    python bench/multimodal.py --seeds 1 --epochs 5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from archlab.train import fit  # noqa: E402

HEAD = [{"linear": 256}, "relu", {"linear": "$num_classes"}]
# zoo:digits-qa's towers, each alone, with the same head (tests/test_multimodal.py trains the same).
MODELS = {
    "both": "zoo:digits-qa",
    "image": {"name": "image-only", "vars": {"num_classes": 10}, "inputs": {"image": {"shape": [1, 8, 8]}},
              "model": [{"flatten": None, "from": "image"}, {"linear": 128}, "relu", {"linear": 128}, *HEAD]},
    "question": {"name": "question-only", "vars": {"num_classes": 10},
                 "inputs": {"question": {"shape": [2], "dtype": "long", "vocab": 14}},
                 "model": [{"embedding": {"vocab": 14, "dim": 32, "init_std": 1.0}, "from": "question"},
                           {"seq_pool": "mean"}, *HEAD]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--epochs", type=int, default=None, help="default: the zoo spec's (10)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = {} if args.epochs is None else {"epochs": args.epochs}
    acc: dict[str, list[float]] = {name: [] for name in MODELS}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as store:
        for seed in range(args.seeds):
            for name, spec in MODELS.items():
                run = fit(spec, data="digits-qa", store=store, quiet=True, seed=seed, **settings)
                acc[name].append(run.test_metrics["acc"])
            print(f"seed {seed}  " + "  ".join(f"{name} {a[-1]:.2%}" for name, a in acc.items()), flush=True)
    epochs = args.epochs or "the spec's 10"
    print(f"test accuracy over {args.seeds} seed(s), {epochs} epochs:")
    for name, a in acc.items():
        print(f"  {name:<9} {min(a):.2%} .. {max(a):.2%}  (mean {sum(a) / len(a):.2%})")
    print(f"wall time {time.perf_counter() - start:.1f} s (torch {torch.__version__}, 1 thread)")


if __name__ == "__main__":
    main()
