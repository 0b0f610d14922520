"""Predict: classify uploaded or camera images with a finished run's model (and see where it looked), or with
a pretrained classifier as it is."""

import pandas as pd
import streamlit as st

from tl_app import charts, explanations, shell, widgets
from tl_app.models import pick_pretrained, predictor_for
from tl_core.inference.tta import MODES as TTA_MODES

shell.guard()

st.title("Predict")
source = st.radio("Model", ["Trained run", "Pretrained, no training"], horizontal=True, key="predict_source")
run, pretrained = None, None
if source == "Pretrained, no training":
    pretrained = pick_pretrained()
    classes = pretrained.labels
else:
    finished = [r for r in widgets.backend().refresh() if r.listed_state == "finished" and r.artifacts.has_model()]
    if not finished:
        widgets.stop_with(
            "No trained model yet. Train one on the Train page, then come back to try it on new "
            "images (or try a pretrained classifier as it is, above).",
            "pages/train.py",
            "Go to Train",
        )
    by_id = {r.id: r for r in finished}
    run_id = st.selectbox(
        "Model (finished run)",
        list(by_id),
        key="predict_run",
        format_func=lambda rid: (
            f"{rid} — val acc {by_id[rid].artifacts.metrics().get('val_accuracy', 0):.3f}, balanced "
            f"{by_id[rid].artifacts.metrics().get('val_balanced_accuracy') or 0:.3f}"
        ),
    )
    run = by_id[run_id]
    classes = run.artifacts.class_names()
num_classes = len(classes)
top_k = st.slider("Top-k", 1, max(1, min(num_classes, 10)), min(3, num_classes), key="predict_topk")
threshold, tta = 0.0, "none"
if run:
    tta = st.radio(
        "Test-time augmentation",
        list(TTA_MODES),
        horizontal=True,
        key="predict_tta",
        help="average the prediction over a mirror image (and zoomed crops): one forward pass per view",
    )
    threshold = st.slider("Answer 'not sure' below this probability", 0.0, 0.99, 0.0, 0.01, key="predict_threshold")
    with st.expander("What the threshold costs (on the validation images, calibrated probabilities)"):
        curve = widgets.validation_coverage(run)
        if curve:
            st.plotly_chart(charts.coverage(curve, threshold), key="predict_coverage")


def pretrained_each(data: list[bytes]) -> list[dict]:
    from tl_core.data.images import ImageRejected

    out = []
    for item in data:
        try:
            out.append({"top_k": pretrained.top_k([item], top_k)[0]})
        except ImageRejected as exc:
            out.append({"error": str(exc)})
    return out


MAX_CARDS = 12  # more images than this: the table instead of thumbnails


def thumbnails(images: list, data: list[bytes], shown: list[int]) -> list[bytes]:
    """The shown uploads' thumbnails, found by upload id after their first showing: each new upload reruns
    this part with every earlier one, and keying by content (widgets.thumbnail) hashed them all again."""
    made = st.session_state.setdefault("predict_thumbnails", {})
    ids = [images[index].file_id for index in shown]
    for gone in made.keys() - set(ids):
        del made[gone]
    for index, file_id in zip(shown, ids):
        if file_id not in made:
            made[file_id] = widgets.thumbnail(data[index])
    return [made[file_id] for file_id in ids]


def answer_caption(name: str, top: list[dict], sure: bool) -> str:
    """Markdown under a thumbnail: the answer in bold (or "not sure"), the runners-up, the file name."""
    best = (
        f"**{widgets.md_escape(top[0]['label'])}** {top[0]['probability']:.1%}"
        if sure
        else f"**not sure** (best guess {widgets.md_escape(top[0]['label'])}, {top[0]['probability']:.1%})"
    )
    rest = " · ".join(f"{widgets.md_escape(g['label'])} {g['probability']:.1%}" for g in top[1:])
    return "  \n".join(part for part in (best, rest, widgets.md_escape(name)) if part)


def answers_table(answered: list) -> pd.DataFrame:
    """One row per answered image; built only when shown or downloaded (not on every upload)."""
    return pd.DataFrame(
        [
            {
                "image": name,
                "answer": top[0]["label"] if sure else "not sure",
                **{f"top{i + 1}": g["label"] for i, g in enumerate(top)},
                **{f"p{i + 1}": round(g["probability"], 4) for i, g in enumerate(top)},
            }
            for _, name, top, sure in answered
        ]
    )


@st.fragment
def uploads_and_answers() -> None:
    """An upload reruns only this part: the choices above, the chart and the sidebar are not redrawn, and
    images seen before are neither decoded nor predicted again (many users share this server)."""
    uploads = st.file_uploader(
        "Images",
        accept_multiple_files=True,
        key="predict_files",
        type=["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"],
    )
    photo = st.session_state.get("predict_camera") if use_camera else None
    images = list(uploads or []) + ([photo] if photo else [])
    if not images:
        st.info("Upload one or more images (or take a photo) to see the model's top labels.")
        if run:
            predictor_for(run)  # load the model while the user picks images
        return
    data = [i.getvalue() for i in images]
    results = predictor_for(run).predict_each(data, top_k, tta=tta) if run else pretrained_each(data)
    answered = []  # (image index, name, top-k, sure)
    for index, (image, result) in enumerate(zip(images, results)):
        if "error" in result:
            st.error(f"{image.name}: {result['error']}")
        else:
            answered.append((index, image.name, result["top_k"], result["top_k"][0]["probability"] >= threshold))
    if not answered:
        return
    if not as_table and len(images) <= MAX_CARDS:
        # One element for every image and its answer: each upload redraws them all, for every user at once,
        # and each element costs the server a message (a card of columns and bars was ~10 of them).
        st.image(
            thumbnails(images, data, [index for index, *_ in answered]),
            output_format="JPEG",
            width=widgets.THUMBNAIL_WIDTH,
            caption=[answer_caption(name, top, sure) for _, name, top, sure in answered],
        )
    else:
        st.dataframe(
            answers_table(answered),
            hide_index=True,
            key="predict_table",
            column_config={
                f"p{i + 1}": st.column_config.ProgressColumn(
                    f"p{i + 1}", min_value=0.0, max_value=1.0, format="percent"
                )
                for i in range(len(answered[0][2]))
            },
        )
    st.download_button(
        "Download predictions (CSV)",
        lambda: answers_table(answered).to_csv(index=False),
        on_click="ignore",
        file_name=f"predictions-{run.id if run else 'pretrained'}.csv",
        mime="text/csv",
        key="predict_csv",
    )
    if explain:
        by_index = {index: (name, top) for index, name, top, _ in answered}
        picked = st.selectbox(
            "Image to explain",
            [None, *by_index],
            key="predict_cam_pick",
            format_func=lambda i: "choose an image" if i is None else by_index[i][0],
        )
        if picked is not None:
            explanations.gradcam_view(run, data[picked], by_index[picked][1][0]["label"], key="predict_cam")


# Outside the fragment: an upload does not redraw them (a photo taken reruns the page, fragment included).
left, middle, right = st.columns(3)
use_camera = left.toggle("Use camera", key="predict_cam_on")
as_table = middle.toggle("As a table", key="predict_as_table", help=f"always a table beyond {MAX_CARDS} images")
explain = bool(run) and right.toggle("Where did it look? (Grad-CAM)", key="predict_explain")
if use_camera:
    st.camera_input("Take a photo", key="predict_camera")
uploads_and_answers()
