"""The Train page's sections. Each widget takes its label, default, range, choices and help from the settings'
schema (``tl_core.models.config.SETTINGS``); each section returns the values it sets, keyed by ``TrainConfig``
field, for ``TrainConfig.from_form``. Widget keys are ``train_*`` (tests and the browser checks use them)."""

from __future__ import annotations

import dataclasses

import streamlit as st

from tl_core import device
from tl_core.data import datasets
from tl_core.errors import TLError
from tl_core.models import architectures, freeze
from tl_core.models.config import SETTINGS, TrainConfig
from tl_core.models.heads import HEAD_KINDS, head_kind
from tl_core.runs.store import run_by_id

from . import widgets
from .auth import current_user


def _kind(name: str, value):
    """``value`` as the field's number type: Streamlit refuses mixed int and float bounds."""
    kind = SETTINGS[name].kind
    return kind(value) if value is not None and kind in (int, float) else value


def _label(name: str) -> str:
    return SETTINGS[name].widget.get("label", SETTINGS[name].label)


def _bounds(name: str, key: str, **given) -> dict:
    """Range and default: the field's, narrowed by its widget hints, then by ``given``; widened again to hold a
    value a copied run put in the widget's state (the schema allowed it, the widget's hints need not)."""
    spec = SETTINGS[name]
    hints = {"min_value": spec.low, "max_value": spec.high, "value": spec.default, **spec.widget, **given}
    for other in ("options", "fraction", "label"):
        hints.pop(other, None)
    held = st.session_state.get(key)
    if isinstance(held, (int, float)) and not isinstance(held, bool):
        if hints.get("min_value") is not None and held < hints["min_value"]:
            hints["min_value"] = held
        if hints.get("max_value") is not None and held > hints["max_value"]:
            hints["max_value"] = held
    return {k: _kind(name, v) if k in ("min_value", "max_value", "value") else v for k, v in hints.items()}


def _with_held(options, key: str) -> list:
    """``options`` plus the value a copied run put in the widget's state, when it is not one of them."""
    options, held = list(options), st.session_state.get(key)
    if key in st.session_state and held not in options:
        numbers = [o for o in options if isinstance(o, (int, float))]
        options = [o for o in options if o not in numbers] + sorted([*numbers, held])
    return options


def _number_input(place, name: str, key: str, **given):
    return place.number_input(_label(name), key=key, help=SETTINGS[name].help, **_bounds(name, key, **given))


def _slider(place, name: str, key: str, **given):
    return place.slider(_label(name), key=key, help=SETTINGS[name].help, **_bounds(name, key, **given))


def _select_slider(place, name: str, key: str, **given):
    spec = SETTINGS[name]
    value = given.pop("value", spec.widget.get("value", spec.default))
    options = _with_held(given.pop("options", spec.widget.get("options")), key)
    return place.select_slider(
        _label(name), options, value=value, key=key, help=given.pop("help", spec.help), format_func=_short, **given
    )


def _selectbox(place, name: str, key: str, **given):
    spec = SETTINGS[name]
    options = _with_held(spec.widget.get("options") or spec.choice_words(), key)
    default = spec.none_word if spec.default is None else spec.default
    return place.selectbox(_label(name), options, index=options.index(default), key=key, help=spec.help, **given)


def _toggle(place, name: str, key: str, **given):
    return place.toggle(_label(name), value=SETTINGS[name].default, key=key, help=SETTINGS[name].help, **given)


KEYS = {  # settings whose widget key is the same for every base
    "learning_rate": "train_lr",
    "optimizer": "train_optimizer",
    "epochs": "train_epochs",
    "batch_size": "train_batch",
    "early_stopping": "train_early",
    "patience": "train_patience",
    "dropout": "train_dropout",
    "class_weights": "train_class_weights",
    "augment": "train_augment",
    "flip": "train_flip",
    "rotation": "train_rotation",
    "zoom": "train_zoom",
    "aug_views": "train_views",
    "fine_tune_lr": "train_ft_lr",
    "fine_tune_epochs": "train_ft_epochs",
    "budget": "train_budget",
}


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def dataset_choice(names: list[str]) -> str:
    """The dataset, with its class-imbalance warning."""
    data = st.selectbox(_label("data"), names, key="train_data")
    imbalance = datasets.imbalance_warning(datasets.load_dataset(data))
    if imbalance:
        st.warning(imbalance)
    return data


def base_choice(models: dict[str, dict]) -> dict:
    """Base model (those with weights on disk first), its width multiplier and input size."""

    def label(name: str) -> str:
        row = models[name]
        if row["alphas"]:  # parameters depend on the width: the chosen variant's count shows below
            offline = ", ".join(map(str, row["offline_alphas"]))
            weights = f"weights offline for alpha {offline} ✓" if offline else "weights download on first use"
            return f"{name} — {row['default_size']} px, {weights}"
        weights = "weights offline ✓" if row["weights_offline"] else "weights download on first use"
        return f"{name} — {row['params'] / 1e6:.1f}M params, {row['default_size']} px, {weights}"

    offline_first = sorted(models, key=lambda n: (not models[n]["weights_offline"], list(models).index(n)))
    base = st.selectbox(_label("base"), offline_first, format_func=label, key="train_base")
    arch = architectures.get(base)
    alpha = None
    if arch.alphas:
        offline = models[base]["offline_alphas"]
        alpha = _select_slider(
            st,
            "alpha",
            f"train_alpha_{base}",
            options=list(arch.alphas),
            value=offline[0] if offline else arch.default_alpha,
            help="Weights on disk for: " + (", ".join(map(str, offline)) or "none"),
        )
    size = _number_input(st, "size", f"train_size_{base}", min_value=arch.min_size, value=arch.default_size)
    _variant_note(arch, alpha, int(size))
    return {"base": base, "alpha": alpha, "size": int(size)}


def _variant_note(arch: architectures.Architecture, alpha, size: int) -> None:
    """The chosen variant's own parameter count, and whether its weights are on this server, before queueing."""
    with st.spinner("Reading the base's layers…"):
        params = freeze.describe(arch.name, alpha, size)["params"]
    variant = f"{arch.name}{f' alpha {alpha}' if alpha is not None else ''} at {size} px"
    if architectures.find_weights(arch, alpha, size):
        st.caption(f"{variant}: {params:,} parameters; ImageNet weights on this server ✓")
        return
    wanted = architectures.weights_dir() / arch.weights_filename(alpha, size)
    st.warning(
        f"{variant} ({params:,} parameters): its ImageNet weights are not on this server. Training will try to "
        f"download {wanted.name!r} into {str(wanted.parent)!r} and fails without internet: pick a variant marked "
        "offline, or put the file there first."
    )


def head_choice() -> str:
    return st.radio(
        _label("head"),
        list(HEAD_KINDS),
        horizontal=True,
        key="train_head",
        format_func=lambda name: head_kind(name).label,
        help=SETTINGS["head"].help,
    )


def freeze_choice(base: str, alpha, size: int, head: str) -> tuple[dict, int]:
    """The freeze depth slider and where it cuts the base; returns the base's layer description and the depth."""
    with st.spinner("Reading the base's layers…"):
        description = freeze.describe(base, alpha, size)
    n_layers = description["num_layers"]
    depth = _slider(
        st,
        "freeze_depth",
        f"train_depth_{base}",
        min_value=0,
        max_value=n_layers,
        value=freeze.parse_depth(SETTINGS["freeze_depth"].default, n_layers),
        disabled=not head_kind(head).fine_tunes,
    )
    summary = freeze.preview(description, depth)
    st.caption(
        f"Cut: first trainable layer **{summary['first_trainable_layer'] or '— (whole base frozen)'}**. "
        f"Base parameters trainable **{summary['base_trainable_params']:,}**, frozen "
        f"**{summary['base_frozen_params']:,}**. BatchNorm layers always stay frozen."
    )
    return description, depth


def optimisation_settings() -> dict:
    cols = st.columns(4)
    values = {
        "learning_rate": _select_slider(cols[0], "learning_rate", KEYS["learning_rate"]),
        "optimizer": _selectbox(cols[1], "optimizer", KEYS["optimizer"]),
        "epochs": _number_input(cols[2], "epochs", KEYS["epochs"]),
        "batch_size": _select_slider(cols[3], "batch_size", KEYS["batch_size"]),
    }
    cols = st.columns(4)
    values["early_stopping"] = _toggle(cols[0], "early_stopping", KEYS["early_stopping"])
    values["patience"] = _number_input(cols[1], "patience", KEYS["patience"], disabled=not values["early_stopping"])
    values["dropout"] = _slider(cols[2], "dropout", KEYS["dropout"])
    values["class_weights"] = _selectbox(cols[3], "class_weights", KEYS["class_weights"])
    return values


def augmentation_settings() -> dict:
    cols = st.columns(5)
    augment = _toggle(cols[0], "augment", KEYS["augment"])
    return {
        "augment": augment,
        "flip": _toggle(cols[1], "flip", KEYS["flip"], disabled=not augment),
        "rotation": _slider(cols[2], "rotation", KEYS["rotation"], disabled=not augment),
        "zoom": _slider(cols[3], "zoom", KEYS["zoom"], disabled=not augment),
        "aug_views": _selectbox(cols[4], "aug_views", KEYS["aug_views"], disabled=not augment),
    }


def fine_tune_settings(description: dict, base: str, head: str) -> tuple[bool, dict]:
    """The time budget (the autopilot's fine-tune phase); whether to fine-tune by hand after the head is trained
    (only a head that fine-tunes can), and the phase's depth, learning rate and epochs."""
    budget = _selectbox(st, "budget", KEYS["budget"], disabled=not head_kind(head).fine_tunes)
    auto = f"On this server 'auto' is {device.default_budget():g} s. " if budget == SETTINGS["budget"].none_word else ""
    st.caption(
        auto + "With a budget, the head trains as always; then, if the frozen base falls short, a fine-tune phase that "
        "fits the budget follows, and the better model by validation is kept. Results says what was chosen and "
        "why. Set the phase by hand below and your settings win; 0 trains the head only."
    )
    on = st.toggle(
        "Unfreeze the top of the base and continue at a lower learning rate",
        key="train_ft",
        disabled=not head_kind(head).fine_tunes,
    )
    n_layers = description["num_layers"]
    depth = _slider(
        st,
        "fine_tune_depth",
        f"train_ft_depth_{base}",
        min_value=0,
        max_value=n_layers,
        value=int(n_layers * SETTINGS["fine_tune_depth"].widget["fraction"]),
        disabled=not on,
    )
    summary = freeze.preview(description, depth)
    st.caption(
        f"Unfreezes from **{summary['first_trainable_layer']}**: "
        f"{summary['base_trainable_params']:,} base parameters train."
    )
    if summary["clean_cut"]:
        st.caption("Clean cut between blocks: with augmentation off, the frozen part runs once, not every epoch.")
    else:
        below, above = summary["nearest_clean_cuts"]
        st.caption(
            f"This depth is inside a block, so every epoch runs the whole base. Nearest clean cuts: {below} and {above}."
        )
    cols = st.columns(2)
    values = {
        "budget": budget,
        "fine_tune_depth": depth,
        "fine_tune_lr": _select_slider(cols[0], "fine_tune_lr", KEYS["fine_tune_lr"], disabled=not on),
        "fine_tune_epochs": _number_input(cols[1], "fine_tune_epochs", KEYS["fine_tune_epochs"], disabled=not on),
    }
    return on, values


AGAIN = "train_again"  # a run id: Results asks this page to copy that run's settings into the form
URL_FILLED = "form_filled_from_url"  # set once this session looked at ?run= (only a session's first visit fills; not a train_* key, which "Back to the defaults" clears)
COPIED = "train_copied"  # {"run": its name and id, "config": its settings}: where the form's settings came from


def prefill_from_run(dataset_names: list[str]) -> None:
    """With a run id under ``AGAIN`` (Results' "Train again with these settings"), put every setting of its
    ``config.json`` into the form's widgets (their ``train_*`` keys), its dataset at the current version, and
    remember the run for ``carry_over``. Then, while a copied run is remembered, say so, with a way back to
    the defaults. Call before the form's widgets exist.

    A session's first look at this page with ``?run=`` in its URL (a reload after queueing, a shared link)
    fills the form from that run the same way: the settings come back with the page."""
    if not st.session_state.get(URL_FILLED):
        st.session_state[URL_FILLED] = True
        linked = st.query_params.get("run")
        if linked and AGAIN not in st.session_state and COPIED not in st.session_state:
            try:
                run_by_id(linked)
                st.session_state[AGAIN] = linked
            except TLError:
                pass  # a run deleted since: the form keeps its defaults
    run_id = st.session_state.pop(AGAIN, None)
    if run_id:
        try:
            run = run_by_id(run_id)
            cfg = run.config
            _fill_widgets(cfg, dataset_names)
        except TLError as exc:
            st.error(widgets.md_escape(str(exc)))
            return
        named = f"{run.name} ({run_id})" if run.name else run_id
        st.session_state[COPIED] = {"run": named, "config": dataclasses.asdict(cfg)}
    copied = st.session_state.get(COPIED)
    if not copied:
        return
    source = copied["config"]
    hidden = [
        f"{SETTINGS[name].label.lower()} {_short(source[name])}"
        for name in _hidden_fields()
        if source[name] != SETTINGS[name].default
    ]
    left, right = st.columns([4, 1], vertical_alignment="center")
    left.info(
        widgets.md_escape(f"Settings of run {copied['run']} filled in, on the current version of its dataset.")
        + (" Also kept, with no control here: " + widgets.md_escape(", ".join(hidden)) + "." if hidden else "")
        + " Change any, then start training."
    )
    if right.button("Back to the defaults", key="train_forget_copy"):
        for key in [k for k in st.session_state if str(k).startswith("train_") and k != "train_last_run"]:
            del st.session_state[key]
        st.rerun()


def _hidden_fields() -> list[str]:
    """Settings the form has no widget for: a copied run keeps its own."""
    shown = {"data", "base", "alpha", "size", "head", "freeze_depth", "fine_tune_depth", *KEYS}
    return [name for name in SETTINGS if name not in shown]


def _fill_widgets(cfg: TrainConfig, dataset_names: list[str]) -> None:
    state = st.session_state
    dataset = cfg.data.partition("@")[0]
    if dataset in dataset_names:
        state["train_data"] = dataset
    else:
        st.warning(widgets.md_escape(f"The run's dataset {dataset!r} is no longer here: choose another."))
    base = architectures.get(cfg.base).name
    state["train_base"] = base
    if cfg.alpha is not None:
        state[f"train_alpha_{base}"] = cfg.alpha
    if cfg.size is not None:
        state[f"train_size_{base}"] = cfg.size
    state["train_head"] = cfg.head
    layers = freeze.describe(base, cfg.alpha, cfg.size)["num_layers"]
    state[f"train_depth_{base}"] = freeze.parse_depth(cfg.freeze_depth, layers)
    fine_tunes = cfg.fine_tune_depth is not None
    state["train_ft"] = fine_tunes
    if fine_tunes:
        state[f"train_ft_depth_{base}"] = freeze.parse_depth(cfg.fine_tune_depth, layers)
    for name, key in KEYS.items():
        value = getattr(cfg, name)
        if name.startswith("fine_tune") and not fine_tunes:
            continue
        state[key] = SETTINGS[name].none_word if value is None else value


def carry_over(values: dict, num_layers: int) -> dict:
    """The form's ``values`` (keyed by ``TrainConfig`` field) completed from the copied run, if any: the settings
    the form has no widget for, and a freeze depth the run gave as a word or fraction ('all', 0.7) where the
    slider still stands at the layer count it means, so an unchanged form makes the same config."""
    copied = st.session_state.get(COPIED)
    if not copied:
        return values
    source = copied["config"]
    merged = {**{name: source[name] for name in _hidden_fields() if name in source}, **values}
    same_base = all(values.get(k) == source.get(k) for k in ("base", "alpha", "size"))
    for name in ("freeze_depth", "fine_tune_depth"):
        depth = source.get(name)
        if same_base and depth is not None and values.get(name) == freeze.parse_depth(depth, num_layers):
            merged[name] = depth
    return merged


def start_button(config: TrainConfig, jobs) -> None:
    """Queue ``config``; the run id goes to the session and the URL, so a reload keeps showing this job."""
    if st.button("Start training", type="primary", key="train_start"):
        try:
            run = jobs.submit(config, user=current_user())
            st.session_state["train_last_run"] = run.id
            st.query_params["run"] = run.id
            st.toast(f"Queued {widgets.md_escape(run.id)}")
        except TLError as exc:
            st.error(widgets.md_escape(str(exc)))


@st.fragment(run_every=2)
def live_jobs(jobs) -> None:
    """Running and queued jobs (and this session's last one), refreshed every 2 s."""
    runs = jobs.refresh()  # one listing for the whole panel
    running, waiting = jobs.active(runs), jobs.queue(runs)
    mine = st.session_state.get("train_last_run") or st.query_params.get("run")
    shown = running + waiting
    if mine and mine not in [r.id for r in shown]:
        try:
            shown.append(run_by_id(mine))  # from the URL: a run id of this workspace, never a path
        except TLError:
            pass
    if not shown:
        latest = runs[:1]
        if not latest:
            st.caption("No job running or queued.")
            return
        st.caption("No job running or queued. Last run:")
        shown = latest
    for run in shown:
        with st.container(border=True):
            widgets.job_progress(run, key="train")
