"""`python -m keras_resnet.cli`: the `keras-resnet` command."""

import sys

from keras_resnet.cli import main

sys.exit(main())
