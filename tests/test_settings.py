"""One schema for training settings (``tl_core.models.config.SETTINGS``): the checks, every CLI training flag and
the Train page's widgets all read it."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tl_core import cli
from tl_core.cli.settings import config_from_args
from tl_core.errors import TLError
from tl_core.models.config import SETTINGS, TrainConfig

from .conftest import REPO, make_class_folders

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
TRAINING_COMMANDS = {"train": (), "submit": (), "lr-find": (), "compare": ("base",)}  # compare takes --bases


def subcommand(name: str):
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    return commands[name]


def parsed(*argv: str) -> TrainConfig:
    return config_from_args(cli.build_parser().parse_args(list(argv)))


def run_cli(*argv, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "tl_core", *map(str, argv)],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_every_field_has_a_flag_on_every_training_command(command):
    dests = {action.dest for action in subcommand(command)._actions}
    missing = [name for name in FIELDS if name not in dests and name not in TRAINING_COMMANDS[command]]
    assert not missing, f"{command} has no flag for {missing}"
    assert "config_file" in dests


def test_each_new_flag_sets_its_field():
    cfg = parsed(
        "train", "--data", "d", "--resize", "squash", "--label-smoothing", "0.1", "--no-flip", "--rotation", "0.2",
        "--zoom", "0.3", "--no-use-feature-cache", "--mixed-precision", "off", "--xla", "--distribute", "none",
        "--classifier-c", "2.5", "--aug-views", "auto", "--early-stopping",
    )  # fmt: skip
    assert (cfg.resize, cfg.label_smoothing, cfg.flip, cfg.rotation, cfg.zoom) == ("squash", 0.1, False, 0.2, 0.3)
    assert (cfg.use_feature_cache, cfg.mixed_precision, cfg.xla, cfg.distribute) == (False, "off", True, "none")
    assert (cfg.classifier_c, cfg.aug_views, cfg.early_stopping) == (2.5, None, True)


OLD_FLAGS = [  # what each flag name gave before the schema (tl_core/cli.py's _config_from_args)
    ([], {}),
    (["--base", "mobilenetv2", "--alpha", "0.35", "--size", "64"], dict(base="mobilenetv2", alpha=0.35, size=64)),
    (["--lr", "0.01"], dict(learning_rate=0.01)),
    (["--learning-rate", "0.003"], dict(learning_rate=0.003)),
    (["--optimizer", "SGD"], dict(optimizer="sgd")),
    (["--epochs", "2", "--batch-size", "8", "--dropout", "0.2"], dict(epochs=2, batch_size=8, dropout=0.2)),
    (["--aug-views", "4", "--patience", "3"], dict(aug_views=4, patience=3)),
    (["--no-augment", "--no-early-stopping"], dict(augment=False, early_stopping=False)),
    (["--head", "logreg", "--class-weights", "off"], dict(head="logreg", class_weights="off")),
    (
        ["--fine-tune-depth", "100", "--fine-tune-epochs", "3", "--fine-tune-lr", "1e-5"],
        dict(fine_tune_depth="100", fine_tune_epochs=3, fine_tune_lr=1e-5),
    ),
    (["--freeze-depth", "120"], dict(freeze_depth="120")),
    (["--freeze-depth", "0.5"], dict(freeze_depth="0.5")),
    (["--weights", "none", "--seed", "7"], dict(weights=None, seed=7)),
    (["--weights", "imagenet"], {}),
]


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
@pytest.mark.parametrize("argv, changed", OLD_FLAGS)
def test_each_old_flag_name_still_parses_to_the_same_value(command, argv, changed):
    if "--base" in argv and command == "compare":
        return
    expected = dict(
        data="d", base="MobileNetV2", alpha=None, size=None, freeze_depth="all", head="keras", learning_rate=1e-3,
        optimizer="adam", epochs=20, batch_size=32, dropout=0.5, aug_views=None, patience=5, augment=True,
        early_stopping=True, class_weights="auto", fine_tune_depth=None, fine_tune_epochs=0, fine_tune_lr=None,
        weights="imagenet", seed=42,
    )  # fmt: skip
    expected.update(changed)
    cfg = parsed(command, "--data", "d", *argv)
    assert {name: getattr(cfg, name) for name in expected} == expected


def test_config_file_round_trip_with_a_flag_overriding_it(tmp_path):
    saved = TrainConfig(data="colors@v2", base="ResNet50", size=96, head="svm", classifier_c=0.5, zoom=0.2, flip=False)
    path = tmp_path / "config.json"
    path.write_text(saved.to_json(), encoding="utf-8")
    assert parsed("train", "--config", str(path)) == saved
    again = parsed("train", "--config", str(path), "--epochs", "3", "--flip", "--data", "other")
    assert again == dataclasses.replace(saved, epochs=3, flip=True, data="other")
    assert TrainConfig.from_dict(json.loads(again.to_json())) == again


def test_an_old_runs_config_json_still_loads(tmp_path):
    """A config.json written before the schema: extra={} beside the fields, and weights saved as null."""
    old = {f: SETTINGS[f].default for f in FIELDS} | {"data": "colors", "weights": None, "freeze_depth": 120}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**old, "extra": {}}), encoding="utf-8")
    cfg = TrainConfig.load(path)
    assert dataclasses.asdict(cfg) == old
    assert cfg.resolved().weights is None


BAD_VALUES = [
    ("dropout", 1.5, "--dropout"),
    ("learning_rate", 0.0, "--lr"),
    ("epochs", 0, "--epochs"),
    ("aug_views", 17, "--aug-views"),
    ("rotation", 0.9, "--rotation"),
    ("classifier_c", 0.0, "--classifier-c"),
    ("head", "bogus", "--head"),
    ("mixed_precision", "maybe", "--mixed-precision"),
    ("freeze_depth", "deep", "--freeze-depth"),
]


@pytest.mark.parametrize("field, value, flag", BAD_VALUES)
def test_a_value_outside_its_range_or_choices_is_refused_quoting_it(field, value, flag):
    with pytest.raises(TLError, match=f"{SETTINGS[field].label}.*{value!r}"):
        TrainConfig(data="x", **{field: value}).resolved()
    with pytest.raises(SystemExit) as refused:
        cli.build_parser().parse_args(["train", "--data", "x", flag, str(value)])
    assert refused.value.code == 2


def test_the_command_line_refuses_bad_values_with_an_error_line_and_exit_2(tmp_path):
    out = run_cli("train", "--data", "x", "--dropout", "1.5")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: argument --dropout: Dropout must be in [0, 1); got '1.5'" in out.stderr
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"data": "x", "mixed_precision": "maybe"}), encoding="utf-8")
    out = run_cli("lr-find", "--config", bad)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: Mixed precision must be one of ('auto', 'on', 'off'); got 'maybe'" in out.stderr
    out = run_cli("submit", "--config", tmp_path / "missing.json")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "missing.json" in out.stderr


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_the_train_page_widgets_show_the_schemas_defaults(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tl_core.data import datasets

    datasets.add_folder(make_class_folders(tmp_path / "src"), "colors")
    for name, default in {"epochs": 7, "dropout": 0.25, "learning_rate": 3e-4, "optimizer": "sgd"}.items():
        monkeypatch.setitem(SETTINGS, name, dataclasses.replace(SETTINGS[name], default=default))
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="train_epochs").value == 7
    assert at.slider(key="train_dropout").value == 0.25
    assert at.select_slider(key="train_lr").value == 3e-4
    assert at.selectbox(key="train_optimizer").value == "sgd"
    assert at.number_input(key="train_patience").value == SETTINGS["patience"].default
    assert at.slider(key="train_rotation").value == SETTINGS["rotation"].default
    assert at.selectbox(key="train_views").value == "auto"
    assert at.selectbox(key="train_class_weights").value == SETTINGS["class_weights"].default
    assert at.selectbox(key="train_budget").value == "auto" and at.selectbox(key="train_budget").help == (
        SETTINGS["budget"].help
    )
    monkeypatch.setenv("TL_DEFAULT_BUDGET", "120")
    at.run()  # "auto" says the seconds it means on this server
    assert any("On this server 'auto' is 120 s." in c.value for c in at.caption), [c.value for c in at.caption]
    assert at.number_input(key="train_epochs").help == SETTINGS["epochs"].help
    head = at.radio(key="train_head")
    assert head.options == ["Keras head (dense)", "Logistic regression on embeddings", "SVM on embeddings"]
    head.set_value("svm").run()
    assert at.toggle(key="train_ft").disabled, "an SVM head cannot fine-tune (its registry entry says so)"


def test_the_form_values_become_a_config_with_fine_tuning_only_where_the_head_allows_it():
    form = {"data": "colors", "size": 96.0, "epochs": 3.0, "aug_views": "auto", "fine_tune_depth": 100}
    form |= {"fine_tune_epochs": 5, "fine_tune_lr": 1e-4}
    keras = TrainConfig.from_form(form | {"head": "keras"}, fine_tune=True)
    assert (keras.size, keras.epochs, keras.aug_views) == (96, 3, None)
    assert (keras.fine_tune_depth, keras.fine_tune_epochs, keras.fine_tune_lr) == (100, 5, 1e-4)
    for head, fine_tune in (("svm", True), ("keras", False)):
        cfg = TrainConfig.from_form(form | {"head": head}, fine_tune=fine_tune)
        assert (cfg.fine_tune_depth, cfg.fine_tune_epochs, cfg.fine_tune_lr) == (None, 0, None)
        cfg.resolved()
