"""Multi-level training of a growres model with accelerate.

    accelerate launch examples/train.py --model growres_resnet50i --dataset cifar10

Single process, or DDP across GPUs (or CPU processes) as `accelerate launch` is configured. The defaults are
the paper's recipe; `python examples/train.py --help` lists every flag. This script and `growres train` run
the same code: arguments -> TrainConfig -> training_function.
"""
import argparse
import sys

from growres.errors import GrowresError
from growres.train import add_train_arguments, config_from_args, training_function


def main() -> int:
    parser = argparse.ArgumentParser(description="Multi-level ResNet training (Chang et al., ICLR 2018).")
    add_train_arguments(parser)
    args = parser.parse_args()
    try:
        training_function(config_from_args(args))
    except GrowresError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
