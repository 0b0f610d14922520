"""The time budget's autopilot: after the head, a fine-tune phase only when the frozen base falls short and it fits
the budget; hand-set settings win; the choice is recorded and "train again" repeats it."""

from functools import partial

import pytest

from tl_core.errors import TLError
from tl_core.models.config import TrainConfig
from tl_core.runs.store import Run
from tl_core.training import autopilot, paths
from tl_core.training.autopilot import Candidate, Inputs, decide
from tl_core.training.runner import train

from .factories import small_config

SHALLOW, DEEP = Candidate(depth=98, step_s=0.1, start_s=5.0), Candidate(depth=54, step_s=0.3, start_s=8.0)


def inputs(**changed) -> Inputs:
    """A head that underfits, with 60 s left and both candidates measured (an epoch: 4 steps and a third)."""
    given = dict(budget_s=60.0, left_s=60.0, train_accuracy=0.7, val_accuracy=0.65, train_images=120)
    given |= dict(val_images=40, batch_size=32, candidates=(SHALLOW, DEEP))
    return Inputs(**(given | changed))


def test_a_head_good_on_validation_gets_no_fine_tune_phase_whatever_the_budget():
    choice = decide(inputs(train_accuracy=1.0, val_accuracy=0.95, left_s=1e6))
    assert not choice.fine_tune and "not what limits it" in choice.reason


@pytest.mark.parametrize(
    "train_accuracy, val_accuracy, words",
    [(0.7, 0.65, "underfits"), (0.98, 0.72, "not new ones"), (0.86, 0.85, "underfits")],
)
def test_a_frozen_base_that_underfits_or_memorises_gets_the_deepest_depth_whose_epochs_fit(
    train_accuracy, val_accuracy, words
):
    roomy = decide(inputs(train_accuracy=train_accuracy, val_accuracy=val_accuracy, left_s=60.0))
    assert roomy.fine_tune and roomy.depth == DEEP.depth and words in roomy.reason
    assert roomy.epochs == min(autopilot.MAX_EPOCHS, int((60.0 - DEEP.start_s) // roomy.epoch_s))
    assert f"depth {DEEP.depth} costs {roomy.epoch_s:.1f} s" in roomy.reason and "fit the budget" in roomy.reason
    tight = decide(inputs(train_accuracy=train_accuracy, val_accuracy=val_accuracy, left_s=12.0))
    assert tight.fine_tune and tight.depth == SHALLOW.depth, "the deep one fits too few epochs"


def test_a_head_close_to_its_training_accuracy_and_not_underfitting_is_left_alone():
    assert not decide(inputs(train_accuracy=0.93, val_accuracy=0.88)).fine_tune


def test_too_little_budget_for_a_few_epochs_means_no_phase_and_says_so():
    choice = decide(inputs(left_s=6.0))
    assert not choice.fine_tune and "fit the 6 s left of the 60 s budget" in choice.reason


def test_hand_set_epochs_or_depth_win_and_the_phase_is_not_questioned():
    good_head = dict(train_accuracy=1.0, val_accuracy=0.97)
    epochs = decide(inputs(**good_head, hand_epochs=40, left_s=5.0))
    assert epochs.fine_tune and epochs.epochs == 40 and "set by hand" in epochs.reason
    depth = decide(inputs(**good_head, hand_depth=120, candidates=(Candidate(120, 0.05, 1.0),)))
    assert depth.fine_tune and depth.depth == 120 and depth.epochs >= autopilot.MIN_EPOCHS


def test_the_budget_setting_resolves_per_host_and_lets_the_autopilot_choose_a_missing_half(monkeypatch):
    monkeypatch.setenv("TL_DEFAULT_BUDGET", "45")
    assert small_config().resolved().budget == 45.0
    assert small_config(budget=0).resolved().budget == 0.0
    assert small_config(fine_tune_depth=100, budget=30).resolved().fine_tune_lr is None  # the autopilot picks it
    assert small_config(fine_tune_epochs=3, budget=30).resolved().fine_tune_epochs == 3
    with pytest.raises(TLError, match="--budget"):
        small_config(fine_tune_depth=100, budget=0).resolved()
    with pytest.raises(TLError, match="Time budget"):
        small_config(budget=-1).resolved()


# a head that underfits on purpose: one epoch at a learning rate too small to move it
underfit = partial(small_config, epochs=1, learning_rate=1e-7, batch_size=8, augment=False, seed=3)


def fine_tune_rows(run: Run) -> list[dict]:
    return [row for row in run.history() if row.get("phase") == "fine-tune"]


def test_an_underfitting_task_gets_a_recorded_fine_tune_phase_that_train_again_repeats(colors, tmp_path, monkeypatch):
    monkeypatch.setattr(autopilot, "CANDIDATE_FRACTIONS", (0.65,))  # one depth measured, a short phase: a quick test
    monkeypatch.setattr(autopilot, "MAX_EPOCHS", 4)
    builds = {"measured": 0, "phase": 0}

    def counted(where, make):
        def counting(*args, **kwargs):
            builds[where] += 1
            return make(*args, **kwargs)

        return counting

    monkeypatch.setattr(autopilot, "suffix_model", counted("measured", autopilot.suffix_model))
    monkeypatch.setattr(paths, "suffix_model", counted("phase", paths.suffix_model))
    monkeypatch.setattr(paths, "compile_classifier", counted("phase", paths.compile_classifier))
    budget = 90
    run, metrics = train(underfit(budget=budget, fine_tune_lr=1e-3), tmp_path / "auto")
    pilot = metrics["autopilot"]
    # the phase trains the model measured at the chosen depth: one build there, nothing built or compiled again
    assert builds == {"measured": len(pilot["inputs"]["candidates"]), "phase": 0}, builds
    assert pilot["decision"] == "fine-tune" and "underfits" in pilot["reason"], pilot
    assert pilot["inputs"]["candidates"] and pilot["learning_rate"] == 1e-3  # the hand-set rate won
    rows = fine_tune_rows(run)
    assert 1 <= len(rows) <= pilot["epochs"]
    assert pilot["kept"] == "fine-tuned" and pilot["fine_tune_val_accuracy"] >= pilot["head_val_accuracy"]
    assert metrics["duration_s"] <= budget + 10
    assert f"autopilot ({budget} s budget): fine-tune" in (run.root / "log.txt").read_text()
    recorded = run.config
    assert (recorded.fine_tune_depth, recorded.fine_tune_epochs) == (pilot["depth"], pilot["epochs"])
    assert recorded.fine_tune_augment is False and recorded.budget == budget

    again, repeated = train(TrainConfig.load(run.path("config.json")), tmp_path / "again")
    assert repeated["autopilot"]["decision"] == "off" and "by hand" in repeated["autopilot"]["reason"]
    assert repeated["first_trainable_layer"] == metrics["first_trainable_layer"]
    assert len(fine_tune_rows(again)) >= 1 and again.config.fine_tune_depth == pilot["depth"]


def test_budget_0_keeps_the_head_and_a_tiny_budget_spends_nothing_on_a_phase(colors, tmp_path):
    run, metrics = train(underfit(budget=0), tmp_path / "zero")
    assert metrics["autopilot"]["decision"] == "off" and not fine_tune_rows(run)
    assert run.config.budget == 0 and run.config.fine_tune_depth is None
    assert {row["phase"] for row in run.history()} == {"head"}

    tiny, tight = train(underfit(budget=1), tmp_path / "tiny")
    pilot = tight["autopilot"]
    assert pilot["decision"] == "head only" and "budget" in pilot["reason"], pilot
    assert not fine_tune_rows(tiny) and not pilot["inputs"]["candidates"] and pilot["deciding_s"] < 1.0
    assert tight["val_accuracy"] == metrics["val_accuracy"], "the same head as with budget 0"
