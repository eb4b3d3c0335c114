"""`dfd demo`: the offline demo (dfd.tools.demo) as a command."""

import argparse

from .. import demo


def add_parser(subparsers, parent: argparse.ArgumentParser):
    parser = subparsers.add_parser(
        "demo",
        parents=[parent],
        help="train and compare two tiny detectors on synthetic videos, offline",
        description=demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_arguments(parser)
    parser.set_defaults(run=demo.run)
