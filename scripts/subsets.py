"""What `--train-size` and `--test-size` keep of a large photo folder: the class counts of both subsets
and the test accuracy of a one-epoch run on them.

    python scripts/subsets.py --folder /tmp/photos50k --make 50000 --train-size 1024 --test-size 512

The folder (10 class folders of tinted, upscaled Fashion-MNIST JPEGs, `bench_data.make_folder`) has
no test/ folder, so its test split is a stratified 20 % of its files; the subsets are then drawn from
the splits. Prints one JSON line.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", required=True)
    p.add_argument("--make", type=int, default=None, help="make a folder of this many photos first")
    p.add_argument("--side", type=int, default=64, help="side of the photos made")
    p.add_argument("--train-size", type=int, default=1024)
    p.add_argument("--test-size", type=int, default=512)
    p.add_argument("--run-dir", default=None)
    args = p.parse_args()
    if args.make and not os.path.isdir(args.folder):
        from bench_data import make_folder

        make_folder(args.folder, args.make, side=args.side)
    from keras_resnet import training

    recipe = training.Recipe(epochs=1, batch_size=64)
    data = training.load_run_data(args.folder, recipe, train_size=args.train_size, test_size=args.test_size,
                                  image_size=32, transform="small", cache="none")
    train_counts = np.bincount(np.concatenate([data.y_train, data.y_val]), minlength=10).tolist()
    test_counts = np.bincount(data.y_test, minlength=10).tolist()
    run_dir = args.run_dir or os.path.join(args.folder + "_run")
    result = training.train(dataset=args.folder, recipe=recipe, train_size=args.train_size,
                            test_size=args.test_size, image_size=32, transform="small", cache="none", depth=8,
                            width=0.5, run_dir=run_dir, verbose=0)
    print(json.dumps({"folder": args.folder, "train_size": args.train_size, "test_size": args.test_size,
                      "train_class_counts": train_counts, "test_class_counts": test_counts,
                      "test_class_counts_of_the_run": [c["support"] for c in result["per_class"]["classes"]],
                      "test_accuracy": result["test_accuracy"], "epochs_run": result["epochs_run"]}))


if __name__ == "__main__":
    main()
