"""`prepare` (keras_resnet.data.prepared): an image folder written once as sharded records with the
shorter side bounded, for `--dataset` of `train`, `evaluate` and `export`."""


def _prepare(args):
    from keras_resnet.data import prepared

    counts = prepared.prepare(args.folder, args.output, short_side=args.short_side, shard_images=args.shard_images,
                              bad_images=args.bad_images, workers=args.workers)
    print(f"{args.output}: " + ", ".join(f"{n} {split}" for split, n in counts.items())
          + f" images; train from it with --dataset {args.output}")


def add_parsers(sub):
    """The `prepare` subcommand."""
    from keras_resnet.data.common import BAD_IMAGES

    p = sub.add_parser("prepare", help="write an image folder once as shards of photos with a bounded shorter "
                                       "side (a tensorflow-datasets set; resumes an interrupted preparation)")
    p.add_argument("folder", help="a folder of class folders (with train/ and test/ or val/, or without)")
    p.add_argument("output", help="the prepared folder to write (pass it as --dataset)")
    p.add_argument("--short-side", type=int, default=320,
                   help="larger photos are resized to this shorter side, in pixels (default 320)")
    p.add_argument("--shard-images", type=int, default=1024, help="images per shard (default 1024)")
    p.add_argument("--workers", type=int, default=None, help="threads that decode and encode (default: the cores)")
    p.add_argument("--bad-images", choices=BAD_IMAGES, default=BAD_IMAGES[0],
                   help="an image file that does not decode: stop, naming it (default), or skip it, naming it")
    p.set_defaults(func=_prepare)
