"""Training flags, made from the settings' schema (``tl_core.models.config.SETTINGS``): one flag per
``TrainConfig`` field, with the field's names, type, choices, range and help, plus ``--config FILE``.

A flag left out keeps the value of ``--config``'s file, or else the field's default. A value outside its
choices or range is an argparse error (exit 2) that quotes it.
"""

from __future__ import annotations

import argparse
import dataclasses

from tl_core.errors import TLError
from tl_core.models.config import SETTINGS, Setting, TrainConfig


def _converter(spec: Setting):
    def convert(text: str):
        try:
            return spec.parse(text)
        except TLError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = spec.name  # argparse names the type in some of its messages
    return convert


def _help(spec: Setting, default) -> str:
    if default is argparse.SUPPRESS:  # a flag that may come from --config instead
        return spec.help + " (required unless --config names one)" if spec.name == "data" else _help(spec, spec.default)
    if default is None or default == "":
        return spec.help
    shown = ("on" if default else "off") if spec.kind is bool else default
    return f"{spec.help} (default: {shown})"


def add_setting(p: argparse.ArgumentParser, name: str, default=argparse.SUPPRESS, required: bool = False) -> None:
    """The flag(s) of one setting; by default absent from the parsed arguments unless given."""
    spec = SETTINGS[name]
    kwargs = dict(dest=name, default=default, help=_help(spec, default))
    if spec.kind is bool:
        p.add_argument(*spec.cli_flags, action=argparse.BooleanOptionalAction, **kwargs)
        return
    metavar = "{" + ",".join(map(str, spec.choice_words())) + "}" if spec.choices else None
    p.add_argument(*spec.cli_flags, type=_converter(spec), metavar=metavar, required=required, **kwargs)


def add_settings(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Every training setting's flag except those in ``skip``, and ``--config FILE``."""
    p.add_argument(
        "--config",
        dest="config_file",
        metavar="FILE",
        help="start from these settings (a run's config.json); flags given as well override them",
    )
    for name in SETTINGS:
        if name not in skip:
            add_setting(p, name)
    p.set_defaults(settings_parser=p)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The ``--config`` file's settings (or the defaults) with the flags given on top, each field checked."""
    cfg = TrainConfig.load(args.config_file) if args.config_file else TrainConfig()
    cfg = dataclasses.replace(cfg, **{name: getattr(args, name) for name in SETTINGS if hasattr(args, name)})
    if not cfg.data:
        args.settings_parser.error("the following arguments are required: --data (or --config FILE that names one)")
    cfg.check_fields()
    return cfg
