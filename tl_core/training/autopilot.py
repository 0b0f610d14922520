"""The autopilot: whether a run on the defaults adds a fine-tune phase after its head, within its time budget.

The head trains on frozen features as it always does (seconds). Then, with a budget (``TrainConfig.budget``
above 0) and no fine-tune phase set wholly by hand:

1. Is the frozen base the limit? Not when the head's validation accuracy reaches ``GOOD_ENOUGH``. Otherwise it is
   when the head's accuracy on the training images as they are (no augmentation, no dropout) stays under
   ``UNDERFIT_BELOW`` (the frozen features underfit), or when it is ``GAP`` or more above the validation
   accuracy (the head memorises images whose frozen features miss what tells the classes apart). If not, no
   fine-tune phase, and nothing else is spent.
2. What does a fine-tune epoch cost? At candidate depths (clean cuts near ``CANDIDATE_FRACTIONS`` of the base's
   layers frozen, so the frozen prefix runs once; the most trainable first, the next only when the last does
   not fit ``GOOD_EPOCHS``) the part above the cut is built and compiled as the phase compiles it, and a few
   training steps through ``fit`` (as the phase trains), on one batch of the run's images, give a step's cost
   (the first step traces, as does one validation step). The phase's start: the prefix's pass over the images
   the measurement did not cover; the phase trains that very model, so nothing is built or traced again.
3. ``decide``, a pure function of those measurements, the data's size and the time left: the deepest candidate
   for which ``GOOD_EPOCHS`` epochs fit, else the one that fits the most epochs if ``MIN_EPOCHS`` do, else none.
4. The fine-tune learning rate: the learning-rate finder's rule (``lr_find.suggest``) on a short range test of
   the part that will train (the measured model, its steps traced already), clamped to ``LR_RANGE``.
5. The phase: early stopping with the best weights restored, and a stop before an epoch that would end past the
   budget. Then the better of the head alone and the fine-tuned model, by validation accuracy (loss breaks ties).

A depth or epochs set by hand win: only the other is chosen, and the phase is not questioned (step 1 is skipped).
The choice goes into the run's ``config.json`` (fine-tune depth, epochs, learning rate, augmentation off) when
the fine-tuned model is kept, so "train again with these settings" repeats it; ``metrics.json``'s ``autopilot``
holds the decision, its reason and its inputs. The run log says the same.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import keras
import numpy as np

from tl_core.models import engine as engines
from tl_core.models import freeze
from tl_core.models.modeling import Built, compile_classifier, suffix_model
from tl_core.training import lr_find, paths
from tl_core.training.context import TrainingContext

GOOD_ENOUGH = 0.9  # the head's validation accuracy from which a fine-tune phase is not tried
UNDERFIT_BELOW = 0.9  # the head's training accuracy under which the frozen base underfits
GAP = 0.1  # training minus validation accuracy from which the head memorises what the features cannot tell
CANDIDATE_FRACTIONS = (0.35, 0.65)  # share of base layers frozen at the candidate depths, most trainable first
GOOD_EPOCHS = 10  # a deeper candidate is taken when this many of its epochs fit
MIN_EPOCHS = 3  # fewer fitting epochs than this: no fine-tune phase
MAX_EPOCHS = 10  # the keras-io guide's fine-tune length; early stopping may end it sooner
MEASURE_STEPS = 3
RANGE_STEPS = 20
RANGE_IMAGES = 128
LR_RANGE = (1e-5, 3e-4)  # the fine-tune rate stays in here whatever a short, noisy range test says
# from this many images the phase's frozen prefix is converted for the faster engine (LiteRT on a CPU) before its
# one pass; below, converting costs more than it saves
CONVERT_FROM_IMAGES = 500
FINISH_SHARE = 1.0  # the finish after a fine-tune (evaluation, conversion, saving) against the run's set-up


@dataclass(frozen=True)
class Candidate:
    """A depth and what a fine-tune phase there was measured to cost."""

    depth: int  # base layers frozen
    step_s: float  # one training step (a batch)
    start_s: float  # once: the frozen prefix's pass over all images, the first step's tracing


@dataclass(frozen=True)
class Inputs:
    """Everything ``decide`` reads: with the same inputs it chooses the same."""

    budget_s: float
    left_s: float  # the budget less the time spent and the finish's reserve
    train_accuracy: float
    val_accuracy: float
    train_images: int
    val_images: int
    batch_size: int
    candidates: tuple[Candidate, ...] = ()
    hand_depth: Optional[int] = None
    hand_epochs: Optional[int] = None


@dataclass(frozen=True)
class Choice:
    fine_tune: bool
    reason: str
    depth: Optional[int] = None
    epochs: int = 0
    epoch_s: Optional[float] = None


def shortfall(inputs: Inputs) -> str:
    """Why the frozen base looks like the limit, in words; empty when it does not."""
    if inputs.val_accuracy >= GOOD_ENOUGH:
        return ""
    if inputs.train_accuracy < UNDERFIT_BELOW:
        return "the frozen base underfits"
    if inputs.train_accuracy - inputs.val_accuracy >= GAP:
        return "the head tells the training images apart but not new ones: the frozen features miss what matters"
    return ""


def head_words(inputs: Inputs) -> str:
    return f"head reached {inputs.train_accuracy:.2f} train accuracy ({inputs.val_accuracy:.2f} validation)"


def epoch_seconds(candidate: Candidate, inputs: Inputs) -> float:
    """A fine-tune epoch: its training steps and a validation pass (a forward costs about a third of a step)."""
    steps = math.ceil(inputs.train_images / inputs.batch_size)
    return candidate.step_s * (steps + math.ceil(inputs.val_images / inputs.batch_size) / 3)


def fitting_epochs(candidate: Candidate, inputs: Inputs) -> int:
    return max(0, int((inputs.left_s - candidate.start_s) // epoch_seconds(candidate, inputs)))


def decide(inputs: Inputs) -> Choice:
    """Whether to fine-tune, how deep and how long, from measured inputs only."""
    hand = inputs.hand_depth is not None or inputs.hand_epochs is not None
    head = head_words(inputs)
    why = "a fine-tune phase was asked for" if hand else shortfall(inputs)
    if not why:
        return Choice(False, f"{head}: the frozen base is not what limits it; a fine-tune phase is unlikely to pay")
    if not inputs.candidates:
        left = max(0.0, inputs.left_s)
        return Choice(
            False,
            f"{head}: {why}, but the {left:.0f} s left of the {inputs.budget_s:g} s budget cannot measure a depth",
        )
    fits = {c.depth: fitting_epochs(c, inputs) for c in inputs.candidates}
    if inputs.hand_epochs is not None:  # the epochs are set: the deepest candidate they fit, else the cheapest
        fitting = [c for c in inputs.candidates if fits[c.depth] >= inputs.hand_epochs]
        chosen = min(fitting, key=lambda c: c.depth) if fitting else max(inputs.candidates, key=lambda c: c.depth)
        epochs = inputs.hand_epochs
    else:
        good = [c for c in inputs.candidates if fits[c.depth] >= GOOD_EPOCHS]
        chosen = (
            min(good, key=lambda c: c.depth) if good else max(inputs.candidates, key=lambda c: (fits[c.depth], c.depth))
        )
        epochs = min(MAX_EPOCHS, fits[chosen.depth])
    cost = epoch_seconds(chosen, inputs)
    measured = f"one fine-tune epoch at depth {chosen.depth} costs {cost:.1f} s (start {chosen.start_s:.1f} s)"
    if inputs.hand_epochs is None and epochs < MIN_EPOCHS:
        left = max(0.0, inputs.left_s)
        return Choice(
            False,
            f"{head}: {why}; {measured}: only {epochs} epoch(s) fit the {left:.0f} s left of the "
            f"{inputs.budget_s:g} s budget (at least {MIN_EPOCHS} needed)",
            chosen.depth,
            0,
            cost,
        )
    fit_words = "set by hand" if inputs.hand_epochs is not None else "fit the budget"
    return Choice(True, f"{head}: {why}; {measured}; {epochs} epochs {fit_words}", chosen.depth, epochs, cost)


# ---------------------------------------------------------------- running it
@dataclass
class Pilot:
    """What the autopilot did in a run: ``record`` goes into metrics.json."""

    record: dict = field(default_factory=dict)
    cancelled: bool = False
    fine_tuned: bool = False  # the saved model is the fine-tuned one (its base changed)


def off_record(cfg) -> dict:
    """metrics.json's ``autopilot`` for a run it did not decide."""
    if cfg.fine_tunes:
        reason = "the fine-tune phase was set by hand"
    elif not cfg.budget:
        reason = "budget 0: the head only"
    else:
        reason = "the autopilot follows a Keras head on cached features of a frozen base (the defaults)"
    return {"budget_s": float(cfg.budget or 0), "decision": "off", "reason": reason}


def applies(ctx: TrainingContext, outcome: paths.Outcome) -> bool:
    """With a budget, no fine-tune phase wholly set by hand, and a head on cached features of a frozen base."""
    cfg = ctx.cfg
    return bool(cfg.budget) and not cfg.fine_tunes and outcome.train_probs is not None and not outcome.cancelled


def _needs_another(inputs: Inputs) -> bool:
    """Whether to measure a shallower candidate: the last measured (more trainable) one does not fit
    ``GOOD_EPOCHS``."""
    return fitting_epochs(inputs.candidates[-1], inputs) < GOOD_EPOCHS


def candidate_depths(base, hand_depth: Optional[int]) -> list[int]:
    """Clean cuts nearest ``CANDIDATE_FRACTIONS`` of the base's layers (or the hand-set depth), the most trainable
    first."""
    if hand_depth is not None:
        return [hand_depth]
    cuts = freeze.clean_cuts(base)
    layers = len(base.layers)
    if not cuts:
        return [0]
    chosen = {min(cuts, key=lambda cut: abs(cut - fraction * layers)) for fraction in CANDIDATE_FRACTIONS}
    return sorted(chosen)


def converts(ctx: TrainingContext) -> bool:
    """Whether the phase's frozen prefix is converted for the faster engine before its one pass."""
    return len(ctx.train_items) + len(ctx.val_items) >= CONVERT_FROM_IMAGES


def _trainable_part(ctx: TrainingContext, built: Built, depth: int, pixels: np.ndarray):
    """(model that trains, frozen prefix or None, its engine, its inputs for ``pixels``, seconds per image of the
    prefix) at ``depth``."""
    freeze.apply(built.base, depth)
    split = suffix_model(built, depth)
    if split is None:  # no clean cut: the whole model trains on pixels
        return built.model, None, None, pixels.astype(np.float32), 0.0
    prefix, suffix = split
    # the engine the phase will run it on (the phase reuses it); converting (cached on disk) and tracing: once
    forward = engines.engine_for(prefix, log=ctx.note) if converts(ctx) else engines.TensorFlowEngine(prefix)
    forward(pixels[:1])
    start = time.perf_counter()
    inputs = forward(pixels)
    return (
        suffix,
        prefix,
        forward,
        inputs.reshape((len(pixels),) + tuple(suffix.input_shape[1:])),
        (time.perf_counter() - start) / len(pixels),
    )


class Steps(keras.callbacks.Callback):
    """Each training step of a ``fit`` at its own learning rate (``rates``, one a step), its duration kept; with
    a range test's ``curve``, its loss (the batch's own) goes on it, and training stops once it diverged."""

    def __init__(self, rates: list[float], curve: Optional[lr_find.Curve] = None):
        super().__init__()
        self.rates, self.curve = rates, curve
        self.durations: list[float] = []
        self.tick = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rates[len(self.durations)])
        self.model.reset_metrics()  # the logs then hold this batch's loss, not the epoch's running mean
        self.tick = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        self.durations.append(time.perf_counter() - self.tick)
        if self.curve is not None and not self.curve.add(self.rates[len(self.durations) - 1], loss):
            self.model.stop_training = True  # diverged: the curve past here says nothing


@dataclass
class Probe:
    """The trainable part at one depth, compiled as the phase compiles it and traced through ``fit`` (the phase
    trains this very model, so nothing is built or traced again), with its inputs for a sample of training
    images."""

    model: object
    prefix: object
    forward: object
    rows: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    initial: tuple = ()  # (weights, optimizer variables) before the first step

    def state(self) -> tuple:
        return self.model.get_weights(), [np.array(v) for v in self.model.optimizer.variables]

    def reset(self) -> None:
        """Weights and optimizer as before the first step."""
        weights, optimizer = self.initial
        self.model.set_weights(weights)
        for variable, value in zip(self.model.optimizer.variables, optimizer):
            variable.assign(value)

    def train(self, ctx: TrainingContext, batches: list, steps: Steps) -> None:
        """One step on each batch (rows of the sample), in one ``fit``: the phase's traced step."""
        data = ctx.pipeline(self.inputs, self.labels, False, np.concatenate(batches), len(batches[0]))
        self.model.fit(data, epochs=1, class_weight=ctx.class_weight, callbacks=[steps], verbose=0)

    def prepared(self) -> paths.Prepared:
        """For the phase: weights and optimizer as before any step."""
        self.reset()
        known = None if self.prefix is None else (self.rows, self.inputs)
        return paths.Prepared(self.model, self.prefix, self.forward, known)


MEASURE_LR = 1e-7  # the measuring steps' rate: they barely move the weights (which are put back)
RANGE_LRS = (1e-6, 1e-2)  # the range test's rates, from the first step to the last


def measure(ctx: TrainingContext, built: Built, depth: int) -> tuple[Candidate, Probe]:
    """A fine-tune phase's cost at ``depth``, from a few steps on one batch of a sample of training images (the
    first traces; the weights are put back), and the probe that measured it (the range test and the phase go
    on with it)."""
    cfg = ctx.cfg
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(len(ctx.train_items), min(RANGE_IMAGES, len(ctx.train_items)), replace=False))
    model, prefix, forward, inputs, per_image = _trainable_part(ctx, built, depth, ctx.pixels("train")[rows])
    compile_classifier(model, cfg.optimizer, MEASURE_LR, cfg.label_smoothing, ctx.num_classes, cfg.xla or False)
    model.optimizer.build(model.trainable_variables)
    probe = Probe(model, prefix, forward, rows, inputs, ctx.y_train[rows])
    probe.initial = probe.state()
    batch = np.arange(min(cfg.batch_size, len(rows)))
    steps = Steps([MEASURE_LR] * (1 + MEASURE_STEPS))
    probe.train(ctx, [batch] * (1 + MEASURE_STEPS), steps)
    model.evaluate(ctx.pipeline(inputs, probe.labels, False, batch), verbose=0)  # the validation step's trace
    model.set_weights(probe.initial[0])  # the optimizer goes on into the range test, as it always did
    images = len(ctx.train_items) + len(ctx.val_items)
    # the phase starts with the prefix's pass over the images the sample did not cover; nothing is traced again
    left = images - (len(rows) if prefix is not None else 0)
    return Candidate(depth, float(np.median(steps.durations[1:])), round(per_image * left, 3)), probe


def learning_rate(ctx: TrainingContext, probe: Probe) -> tuple[float, dict]:
    """The fine-tune rate by the learning-rate finder's rule, on a short range test of the probe's part (its
    batches drawn as ``lr_find.range_test`` draws them); its weights and optimizer are put back after."""
    rng = np.random.default_rng(ctx.cfg.seed)
    batch = min(ctx.cfg.batch_size, len(probe.labels))
    batches = [rng.choice(len(probe.labels), batch, replace=False) for _ in range(RANGE_STEPS)]
    steps = Steps(lr_find.rates(*RANGE_LRS, RANGE_STEPS), lr_find.Curve())
    probe.train(ctx, batches, steps)
    probe.reset()
    curve = steps.curve
    suggested = lr_find.suggest(np.array(curve.lrs), np.array(curve.losses))
    rate = float(min(max(suggested, LR_RANGE[0]), LR_RANGE[1]))
    return rate, {"suggested": suggested, "steps": len(curve.lrs)}


class BudgetStop(keras.callbacks.Callback):
    """Stops the phase before an epoch that, costing what the last one did (the first: what was measured for
    it, its tracing aside), would end past the deadline."""

    def __init__(self, deadline: float, reserve_s: float, epoch_s: float):
        super().__init__()
        self.deadline, self.reserve_s, self.epoch_s = deadline, reserve_s, epoch_s
        self.began = time.time()
        self.epochs = 0
        self.stopped_after: Optional[int] = None

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.time()

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        self.epochs += 1
        took = now - self.began if self.epochs > 1 else min(now - self.began, 2 * self.epoch_s)
        if now + took + self.reserve_s > self.deadline:
            self.stopped_after = epoch + 1
            self.model.stop_training = True


def _head_scores(ctx: TrainingContext, probs: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of probabilities against the validation labels."""
    picked = probs[np.arange(len(ctx.y_val)), ctx.y_val]
    return float((probs.argmax(axis=1) == ctx.y_val).mean()), float(-np.log(np.clip(picked, 1e-7, 1)).mean())


def _phase_scores(ctx: TrainingContext, early_stopping: bool) -> Optional[tuple[float, float]]:
    """(validation accuracy, loss) of the fine-tune epoch whose weights the model holds now."""
    rows = [row for row in ctx.run.history() if row.get("phase") == "fine-tune" and "val_loss" in row]
    if not rows:
        return None
    row = min(rows, key=lambda r: r["val_loss"]) if early_stopping else rows[-1]
    return float(row["val_accuracy"]), float(row["val_loss"])


def run(ctx: TrainingContext, built: Built, outcome: paths.Outcome) -> Pilot:
    """Decide, and run the fine-tune phase if chosen; leaves ``built.model`` holding the better model and
    ``ctx.cfg`` the settings that made it."""
    cfg = ctx.cfg
    started = ctx.reporter.started
    deadline = started + cfg.budget
    as_built = built.frozen_layers
    num_layers = len(built.base.layers)
    setup_s = ctx.reporter.timeline.setup if ctx.reporter.timeline is not None else 0.0
    reserve_s = max(2.0, setup_s * FINISH_SHARE)
    hand_depth = None if cfg.fine_tune_depth is None else freeze.parse_depth(cfg.fine_tune_depth, num_layers)
    hand_epochs = cfg.fine_tune_epochs or None
    train_acc = float((outcome.train_probs.argmax(axis=1) == ctx.y_train).mean())
    val_acc, val_loss = _head_scores(ctx, outcome.val_probs)

    def inputs(candidates=()) -> Inputs:
        return Inputs(
            budget_s=float(cfg.budget),
            left_s=round(deadline - time.time() - reserve_s, 2),
            train_accuracy=round(train_acc, 4),
            val_accuracy=round(val_acc, 4),
            train_images=len(ctx.train_items),
            val_images=len(ctx.val_items),
            batch_size=cfg.batch_size,
            candidates=tuple(candidates),
            hand_depth=hand_depth,
            hand_epochs=hand_epochs,
        )

    began = time.time()
    ctx.reporter({"kind": "stage", "stage": "autopilot: measuring"})
    choice = decide(inputs())
    candidates: list[Candidate] = []
    probes: dict[int, Probe] = {}
    if hand_depth is not None or hand_epochs is not None or shortfall(inputs()):
        for depth in candidate_depths(built.base, hand_depth):
            if inputs().left_s <= setup_s:
                break  # measuring a depth costs about the run's set-up (building, converting, tracing)
            if candidates and not _needs_another(inputs(candidates)):
                break  # the more trainable one measured fits its epochs
            candidate, probes[depth] = measure(ctx, built, depth)
            candidates.append(candidate)
        freeze.apply(built.base, as_built)
        choice = decide(inputs(candidates))
    record = {
        "budget_s": float(cfg.budget),
        "decision": "fine-tune" if choice.fine_tune else "head only",
        "reason": choice.reason,
        "depth": choice.depth if choice.fine_tune else None,
        "epochs": choice.epochs if choice.fine_tune else 0,
        "inputs": dataclasses.asdict(inputs(candidates)),
        "deciding_s": round(time.time() - began, 3),
    }
    ctx.note(
        f"autopilot ({cfg.budget:g} s budget): {'fine-tune' if choice.fine_tune else 'head only'}: {choice.reason}"
    )
    if not choice.fine_tune or ctx.should_stop():
        return Pilot(record, cancelled=ctx.should_stop())

    lr = cfg.fine_tune_lr
    if lr is None:
        freeze.apply(built.base, choice.depth)  # as the probe was traced
        lr, found = learning_rate(ctx, probes[choice.depth])
        freeze.apply(built.base, as_built)
        record["lr_find"] = found
        ctx.note(f"autopilot: fine-tune learning rate {lr:.1e} (range test suggested {found['suggested']:.1e})")
    record["learning_rate"] = lr
    before = ctx.cfg
    ctx.cfg = dataclasses.replace(
        cfg, fine_tune_depth=choice.depth, fine_tune_epochs=choice.epochs, fine_tune_lr=lr, fine_tune_augment=False
    )
    ctx.run.write_config(ctx.cfg)  # a resumed run continues this phase; "train again" repeats it
    head_weights = built.model.get_weights()
    chosen = next(c for c in candidates if c.depth == choice.depth)
    ctx.reporter.add_phase(paths.fine_tune_phase(ctx), chosen.step_s, chosen.start_s)
    stop = BudgetStop(deadline, reserve_s, choice.epoch_s)
    # the measured model at the chosen depth, as it was compiled and traced: the phase builds nothing again
    cancelled = paths.fine_tune(ctx, built, (stop,), converts(ctx), probes[choice.depth].prepared())
    if stop.stopped_after is not None:
        ctx.note(f"autopilot: fine-tune stopped after epoch {stop.stopped_after}: the next would pass the budget")
    scores = _phase_scores(ctx, ctx.cfg.early_stopping)
    record["head_val_accuracy"] = round(val_acc, 4)
    record["fine_tune_val_accuracy"] = None if scores is None else round(scores[0], 4)
    better = scores is not None and (scores[0] > val_acc or (scores[0] == val_acc and scores[1] < val_loss))
    if cancelled or better:
        record["kept"] = "fine-tuned"
        ctx.note(
            f"autopilot: kept the fine-tuned model ({scores[0]:.3f} validation accuracy vs the head's {val_acc:.3f})"
            if scores
            else "autopilot: cancelled in the fine-tune phase"
        )
        return Pilot(record, cancelled=cancelled, fine_tuned=True)
    built.model.set_weights(head_weights)
    freeze.apply(built.base, as_built)
    ctx.cfg = before
    ctx.run.write_config(before)  # the fine-tuned model was not kept: train again decides anew
    record["kept"] = "head"
    shown = "no epoch" if scores is None else f"{scores[0]:.3f} validation accuracy"
    ctx.note(f"autopilot: kept the head ({val_acc:.3f} validation accuracy; the fine-tuned model reached {shown})")
    return Pilot(record)
