"""`keras-resnet`: build, train, search, export and run residual networks from the command line.

Every flag is named after the library argument it sets (`--batch-size` is `Recipe.batch_size`); the
recipe's, the search space's and the budget's flags are derived from their dataclasses
(`keras_resnet.utils.flags`). Errors are one line, ``keras-resnet <command>: error: ...``, with exit status
2 for bad input and 1 for a failure while running; ``--debug`` shows the traceback and TensorFlow's
native log lines instead.

This module wires the parser and runs a command; each subcommand lives in the module named after it:
`models_summary`, `prepare`, `train_evaluate`, `tune`, `export_predict`, `explain`. The argument groups that
several commands share are in `arguments`. Heavy modules are imported inside the functions that use
them, so `keras-resnet --help` starts without the tuner or the LiteRT converter.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out of the output

from keras_resnet.utils.io_utils import quiet_native_logs  # noqa: E402
from keras_resnet.cli import explain, export_predict, models_summary, prepare, train_evaluate, tune  # noqa: E402
# The shared argument groups stay importable from here, as `keras_resnet.cli.add_model_args` and so on.
from keras_resnet.cli.arguments import (  # noqa: E402,F401
    TEST_SIZE_HELP,
    add_data_args,
    add_model_args,
    add_run_args,
    model_kwargs,
)

# The modules adding the subcommands, in the order `keras-resnet --help` lists them.
COMMANDS = (models_summary, prepare, train_evaluate, tune, export_predict, explain)

# Bad input (exit 2) and failures while running (exit 1), each reported in one line.
USAGE_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
RUNTIME_ERRORS = (OSError, FloatingPointError, RuntimeError, ImportError)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-resnet", description="Residual networks for Keras 3: build, train, search, export, "
                                         "predict, explain. `keras-resnet COMMAND --help` lists a command's flags.")
    parser.add_argument("--debug", action="store_true", help="tracebacks and TensorFlow's native logs")
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    with quiet_native_logs("--debug" not in argv):  # TensorFlow's C++ log lines go nowhere
        try:
            for command in COMMANDS:  # imports the modules
                command.add_parsers(sub)
        except KeyboardInterrupt:
            print("keras-resnet: interrupted while starting; nothing was written", file=sys.stderr)
            return 130
        _python_handles_ctrl_c()
        args = parser.parse_args(argv)
        return _run(args)


def _python_handles_ctrl_c():
    """From here on Ctrl-C is Python's KeyboardInterrupt again (during the imports, the package's own
    handler printed one line and left)."""
    import signal

    import keras_resnet

    if signal.getsignal(signal.SIGINT) is keras_resnet.interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _run(args):
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print(f"keras-resnet {args.command}: interrupted; the same command continues the run", file=sys.stderr)
        return 130
    except USAGE_ERRORS + RUNTIME_ERRORS as e:
        if args.debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"keras-resnet {args.command}: error: {message}", file=sys.stderr)
        distributed = sys.modules.get("keras_resnet.training.distributed")
        if distributed is not None and isinstance(e, distributed.LostProcessError):
            distributed.leave_after_loss()  # JAX's shutdown at exit would wait for the lost process
        return 2 if isinstance(e, USAGE_ERRORS) else 1
