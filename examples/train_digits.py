"""Train a LeNet-style CNN on handwritten digits, save it, reload it, and check the reload.

    python examples/train_digits.py                 # scikit-learn's bundled 8x8 digits (no download)
    python examples/train_digits.py --mnist PATH    # MNIST IDX files in the folder PATH

The 1,797 digits shipped inside scikit-learn are split into a training set and a stratified
held-out test set (20%); MNIST brings its own 60,000/10,000 split. The network is two blocks of
Conv2D -> ReLU -> MaxPool2D, then Linear -> ReLU -> Linear, trained with Adam on the softmax
cross-entropy through PuzzleLib's Trainer. After training the model is saved in PuzzleLib's HDF5
layout, loaded into a freshly built network, and the reloaded network's accuracy and outputs are
compared with the trained one's. The exit status is 0 only when the test accuracy reaches
--min-accuracy and the reload is identical. A progress bar with the running loss shows in a
terminal (--no-progress turns it off); one line per epoch is printed in any case.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time

import numpy as np

from PuzzleLib.Containers import Sequential
from PuzzleLib.Cost import CrossEntropy
from PuzzleLib.Handlers import Calculator, Trainer, Validator
from PuzzleLib.Modules import Activation, Conv2D, Flatten, Linear, MaxPool2D, relu
from PuzzleLib.Optimizers import Adam


# -- data -----------------------------------------------------------------------------------------
def loadDigits(testFraction=0.2, seed=0):
    """scikit-learn's 8x8 digits as (N, 1, 8, 8) float32 in [0, 1] and int32 labels, split per class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, np.newaxis]  # pixel values are 0..16
    labels = digits.target.astype(np.int32)
    trainX, testX, trainY, testY = train_test_split(
        images, labels, test_size=testFraction, stratify=labels, random_state=seed
    )
    return (trainX, trainY), (testX, testY)


def loadMnist(path):
    from PuzzleLib.Datasets import MnistLoader

    return MnistLoader().loadSplit(path)


# -- model ----------------------------------------------------------------------------------------
def buildNet(size, maps=None, hidden=128, classes=10):
    """LeNet-style: two conv/relu/pool blocks halving the map each time, then two linear layers.

    8x8 digits get 3x3 kernels and more maps; 28x28 MNIST gets LeNet's 5x5 kernels and fewer maps,
    which keeps an epoch over 60,000 images to a few minutes on two cores.
    """
    kernel = 3 if size <= 8 else 5
    maps = ((32, 64) if size <= 8 else (16, 32)) if maps is None else maps
    net = Sequential(name="lenet")
    net.append(Conv2D(1, maps[0], kernel, pad=kernel // 2, name="conv1"))
    net.append(Activation(relu, name="relu1"))
    net.append(MaxPool2D(name="pool1"))
    net.append(Conv2D(maps[0], maps[1], kernel, pad=kernel // 2, name="conv2"))
    net.append(Activation(relu, name="relu2"))
    net.append(MaxPool2D(name="pool2"))
    net.append(Flatten(name="flat"))
    net.append(Linear(maps[1] * (size // 4) ** 2, hidden, name="fc1"))
    net.append(Activation(relu, name="relu3"))
    net.append(Linear(hidden, classes, name="fc2"))
    return net


# -- training -------------------------------------------------------------------------------------
def train(net, train, test, epochs, batchsize, learnRate, decay, progress, log):
    (trainX, trainY), (testX, testY) = train, test
    cost = CrossEntropy()
    optimizer = Adam(alpha=learnRate)
    optimizer.setupOn(net, useGlobalState=True)
    trainer = Trainer(net, cost, optimizer, batchsize=batchsize, progress=progress)
    validator = Validator(net, cost, batchsize=512, progress=False)

    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        # The trainer shuffles the order of the batches; shuffling the samples makes new batches each epoch.
        order = np.random.permutation(len(trainX))
        trainer.trainFromHost(trainX[order], trainY[order], random=True)
        accuracy = 1.0 - validator.validateFromHost(testX, testY)
        log(f"epoch {epoch:3d}/{epochs}  train loss {cost.getMeanError():.4f}  "
            f"test accuracy {accuracy:.2%}  lr {optimizer.learnRate:.2e}  {time.perf_counter() - start:5.1f}s")
        optimizer.learnRate *= decay
    return 1.0 - validator.validateFromHost(testX, testY), time.perf_counter() - start


def evaluate(net, testX, testY):
    """(accuracy, outputs) of a network on the test set, in eval mode."""
    error = Validator(net, CrossEntropy(), batchsize=512, progress=False).validateFromHost(testX, testY)
    outputs = Calculator(net, batchsize=512, progress=False).calcFromHost(testX)
    return 1.0 - error, outputs


# -- main -----------------------------------------------------------------------------------------
def parseArgs(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", metavar="PATH", help="train on the MNIST IDX files in this folder instead")
    parser.add_argument("--epochs", type=int, help="passes over the training set (default: 25 digits, 2 MNIST)")
    parser.add_argument("--batchsize", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate")
    parser.add_argument("--decay", type=float, default=0.9, help="learning-rate factor after each epoch")
    parser.add_argument("--subset", type=int, help="train on only this many training samples (for quick runs)")
    parser.add_argument("--save", metavar="FILE", help="where to save the model (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the shuffling")
    parser.add_argument("--min-accuracy", type=float, default=0.97, help="test accuracy the run must reach")
    parser.add_argument("--no-progress", action="store_true", help="no per-batch progress bar")
    parser.add_argument("--threads", type=int,
                        help="BLAS threads (default: 1 for the 8x8 digits, whose matrices are too small to gain "
                             "from more; the BLAS default for MNIST)")
    return parser.parse_args(argv)


def blasThreads(count):
    """Limit the BLAS thread pool (via threadpoolctl, which scikit-learn brings) while training."""
    if count is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=count, user_api="blas")


def main(argv=None, log=print):
    args = parseArgs(argv)
    threads = args.threads if args.threads is not None or args.mnist else 1
    with blasThreads(threads):
        return run(args, log)


def run(args, log):
    np.random.seed(args.seed)

    if args.mnist:
        (trainX, trainY), (testX, testY) = loadMnist(args.mnist)
        epochs = 2 if args.epochs is None else args.epochs
        source = f"MNIST from {args.mnist}"
    else:
        (trainX, trainY), (testX, testY) = loadDigits(seed=args.seed)
        epochs = 25 if args.epochs is None else args.epochs
        source = "scikit-learn's 8x8 digits"
    if args.subset is not None:
        trainX, trainY = trainX[:args.subset], trainY[:args.subset]
    size = trainX.shape[-1]
    log(f"{source}: {len(trainX)} training and {len(testX)} held-out test images of {size}x{size}")

    net = buildNet(size)
    log(f"network: {net.numOfParams()} parameters ({', '.join(type(m).__name__ for m in net)})")
    progress = False if args.no_progress else None
    accuracy, seconds = train(net, (trainX, trainY), (testX, testY), epochs, args.batchsize, args.lr, args.decay,
                              progress, log)
    log(f"trained in {seconds:.1f}s: test accuracy {accuracy:.2%} ({round(accuracy * len(testX))}/{len(testX)})")

    with tempfile.TemporaryDirectory() as folder:
        path = args.save or os.path.join(folder, "lenet.hdf")
        net.save(path)
        log(f"saved the model to {path} ({os.path.getsize(path)} bytes)")

        fresh = buildNet(size)  # new random weights: only the load can make it match
        fresh.load(path)

    trainedAccuracy, trainedOutputs = evaluate(net, testX, testY)
    reloadedAccuracy, reloadedOutputs = evaluate(fresh, testX, testY)
    identical = reloadedAccuracy == trainedAccuracy and np.array_equal(reloadedOutputs, trainedOutputs)
    log(f"reloaded model: test accuracy {reloadedAccuracy:.2%} "
        f"({'identical' if identical else 'DIFFERENT'} to the trained model's {trainedAccuracy:.2%}, "
        f"outputs {'bit-identical' if np.array_equal(reloadedOutputs, trainedOutputs) else 'differ'})")

    ok = identical and accuracy >= args.min_accuracy
    if accuracy < args.min_accuracy:
        log(f"FAILED: test accuracy {accuracy:.2%} is below the required {args.min_accuracy:.2%}")
    return {"accuracy": accuracy, "reloadedAccuracy": reloadedAccuracy, "identical": identical,
            "seconds": seconds, "ok": ok}


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
