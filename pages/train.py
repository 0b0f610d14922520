"""Train: choose data, base model, freeze depth and settings; start a background job and watch it."""

import streamlit as st

from tl_app import shell, widgets
from tl_app.auth import current_user
from tl_app.compare_ui import compare_panel
from tl_app.lr_finder import LEARNING_RATES, lr_finder_panel
from tl_core.data import datasets
from tl_core.errors import TLError
from tl_core.models import architectures, freeze
from tl_core.models.config import CLASS_WEIGHTS, HEADS, TrainConfig
from tl_core.runs.store import run_by_id

shell.guard()

st.title("Train")
jobs = widgets.backend()
all_datasets = datasets.list_datasets()
if not all_datasets:
    widgets.stop_with(
        "Add a dataset on the Data page first: one folder of images per class.", "pages/data.py", "Go to Data"
    )

models = {row["name"]: row for row in architectures.availability()}


def _model_label(name: str) -> str:
    row = models[name]
    weights = "weights offline ✓" if row["weights_offline"] else "weights download on first use"
    return f"{name} — {row['params'] / 1e6:.1f}M params, {row['default_size']} px, {weights}"


left, right = st.columns(2)
with left:
    data = st.selectbox("Dataset", [d.name for d in all_datasets], key="train_data")
    imbalance = datasets.imbalance_warning(datasets.load_dataset(data))
    if imbalance:
        st.warning(imbalance)
    offline_first = sorted(models, key=lambda n: (not models[n]["weights_offline"], list(models).index(n)))
    base = st.selectbox("Base model", offline_first, format_func=_model_label, key="train_base")
    arch = architectures.get(base)
    alpha = None
    if arch.alphas:
        offline_alphas = models[base]["offline_alphas"]
        default_alpha = offline_alphas[0] if offline_alphas else arch.default_alpha
        alpha = st.select_slider(
            "Width multiplier (alpha)",
            list(arch.alphas),
            value=default_alpha,
            key=f"train_alpha_{base}",
            help="Weights on disk for: " + (", ".join(map(str, offline_alphas)) or "none"),
        )
    size = st.number_input(
        "Input size (px)",
        min_value=arch.min_size,
        max_value=1024,
        value=arch.default_size,
        step=16,
        key=f"train_size_{base}",
    )
    head = st.radio("Head", list(HEADS), horizontal=True, key="train_head", format_func=HEADS.get)
with right:
    with st.spinner("Reading the base's layers…"):
        description = freeze.describe(base, alpha, int(size))
    n_layers = description["num_layers"]
    depth = st.slider(
        "Freeze depth: base layers frozen, counted from the input",
        0,
        n_layers,
        n_layers,
        key=f"train_depth_{base}",
        disabled=head != "keras",
        help="All layers frozen trains only the new head (fast: base features are computed once).",
    )
    summary = freeze.preview(description, depth)
    st.caption(
        f"Cut: first trainable layer **{summary['first_trainable_layer'] or '— (whole base frozen)'}**. "
        f"Base parameters trainable **{summary['base_trainable_params']:,}**, frozen "
        f"**{summary['base_frozen_params']:,}**. BatchNorm layers always stay frozen."
    )

with st.expander("Optimisation", expanded=True):
    cols = st.columns(4)
    lr = cols[0].select_slider(
        "Learning rate", LEARNING_RATES, value=1e-3, key="train_lr", format_func=lambda v: f"{v:g}"
    )
    optimizer = cols[1].selectbox("Optimizer", ["adam", "adamw", "sgd", "rmsprop"], key="train_optimizer")
    epochs = cols[2].number_input("Epochs", 1, 500, 20, key="train_epochs")
    batch_size = cols[3].select_slider("Batch size", [8, 16, 32, 64, 128], value=32, key="train_batch")
    cols = st.columns(4)
    early = cols[0].toggle("Early stopping", value=True, key="train_early")
    patience = cols[1].number_input("Patience (epochs)", 1, 50, 5, key="train_patience", disabled=not early)
    dropout = cols[2].slider("Dropout", 0.0, 0.9, 0.5, 0.05, key="train_dropout")
    class_weights = cols[3].selectbox(
        "Class weights",
        CLASS_WEIGHTS,
        key="train_class_weights",
        help="auto: on when the largest class has 3x the images of the smallest",
    )
with st.expander("Augmentation"):
    cols = st.columns(5)
    augment = cols[0].toggle("Augment", value=True, key="train_augment")
    flip = cols[1].toggle("Flip", value=True, key="train_flip", disabled=not augment)
    rotation = cols[2].slider("Rotation", 0.0, 0.5, 0.1, 0.05, key="train_rotation", disabled=not augment)
    zoom = cols[3].slider("Zoom", 0.0, 0.5, 0.1, 0.05, key="train_zoom", disabled=not augment)
    views = cols[4].selectbox(
        "Cached views",
        ["auto", 0, 1, 2, 4, 8],
        key="train_views",
        disabled=not augment,
        help="With a frozen base, extra augmented views of each image whose features are "
        "cached (each costs one forward pass). auto: 2 for upscaled images or classes "
        "under 40 images, else 0; the run log says why.",
    )
with st.expander("Fine-tune phase (after the head is trained)"):
    fine_tune = st.toggle(
        "Unfreeze the top of the base and continue at a lower learning rate", key="train_ft", disabled=head != "keras"
    )
    ft_depth = st.slider(
        "Fine-tune freeze depth", 0, n_layers, int(n_layers * 0.7), key=f"train_ft_depth_{base}", disabled=not fine_tune
    )
    ft_summary = freeze.preview(description, ft_depth)
    st.caption(
        f"Unfreezes from **{ft_summary['first_trainable_layer']}**: "
        f"{ft_summary['base_trainable_params']:,} base parameters train."
    )
    if ft_summary["clean_cut"]:
        st.caption("Clean cut between blocks: with augmentation off, the frozen part runs once, not every epoch.")
    else:
        below, above = ft_summary["nearest_clean_cuts"]
        st.caption(
            f"This depth is inside a block, so every epoch runs the whole base. Nearest clean cuts: "
            f"{below} and {above}."
        )
    cols = st.columns(2)
    ft_lr = cols[0].select_slider(
        "Fine-tune learning rate",
        [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4],
        value=1e-4,
        key="train_ft_lr",
        format_func=lambda v: f"{v:g}",
        disabled=not fine_tune,
    )
    ft_epochs = cols[1].number_input("Fine-tune epochs", 1, 200, 5, key="train_ft_epochs", disabled=not fine_tune)

config = TrainConfig(
    data=data,
    base=base,
    alpha=alpha,
    size=int(size),
    head=head,
    freeze_depth=int(depth),
    learning_rate=float(lr),
    optimizer=optimizer,
    epochs=int(epochs),
    batch_size=int(batch_size),
    early_stopping=early,
    patience=int(patience),
    dropout=float(dropout),
    augment=augment,
    flip=flip,
    rotation=float(rotation),
    zoom=float(zoom),
    aug_views=None if views == "auto" else int(views),
    class_weights=class_weights,
    fine_tune_depth=int(ft_depth) if fine_tune and head == "keras" else None,
    fine_tune_epochs=int(ft_epochs) if fine_tune and head == "keras" else 0,
    fine_tune_lr=float(ft_lr) if fine_tune and head == "keras" else None,
)

with st.expander("Learning-rate finder"):
    lr_finder_panel(config)
with st.expander("Compare bases"):
    compare_panel(config, jobs, n_layers)

if st.button("Start training", type="primary", key="train_start"):
    try:
        run = jobs.submit(config, user=current_user())
        st.session_state["train_last_run"] = run.id
        st.query_params["run"] = run.id  # a reload keeps showing this job
        st.toast(f"Queued {run.id}")
    except TLError as exc:
        st.error(str(exc))


@st.fragment(run_every=2)
def live_jobs():
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


st.subheader("Jobs")
live_jobs()
