"""Predict: classify uploaded or camera images with a finished run's model (and see where it looked), or with
a pretrained classifier as it is."""
import pandas as pd
import streamlit as st

from tl_app import charts, explanations, shell, widgets
from tl_app.models import pick_pretrained, predictor_for
from tl_core.tta import MODES as TTA_MODES

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
        widgets.stop_with("No trained model yet. Train one on the Train page, then come back to try it on new "
                          "images (or try a pretrained classifier as it is, above).", "pages/train.py", "Go to Train")
    by_id = {r.id: r for r in finished}
    run_id = st.selectbox("Model (finished run)", list(by_id), key="predict_run", format_func=lambda rid: (
        f"{rid} — val acc {by_id[rid].artifacts.metrics().get('val_accuracy', 0):.3f}, balanced "
        f"{by_id[rid].artifacts.metrics().get('val_balanced_accuracy') or 0:.3f}"))
    run = by_id[run_id]
    classes = run.artifacts.class_names()
num_classes = len(classes)
top_k = st.slider("Top-k", 1, max(1, min(num_classes, 10)), min(3, num_classes), key="predict_topk")
threshold, tta = 0.0, "none"
if run:
    tta = st.radio("Test-time augmentation", list(TTA_MODES), horizontal=True, key="predict_tta",
                   help="average the prediction over a mirror image (and zoomed crops): one forward pass per view")
    threshold = st.slider("Answer 'not sure' below this probability", 0.0, 0.99, 0.0, 0.01, key="predict_threshold")
    with st.expander("What the threshold costs (on the validation images, calibrated probabilities)"):
        curve = widgets.validation_coverage(run)
        if curve:
            st.plotly_chart(charts.coverage(curve, threshold), key="predict_coverage")
uploads = st.file_uploader("Images", accept_multiple_files=True, key="predict_files",
                           type=["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"])
photo = st.camera_input("Or take a photo", key="predict_camera") if st.toggle("Use camera", key="predict_cam_on") \
    else None
images = list(uploads or []) + ([photo] if photo else [])
if not images:
    st.info("Upload one or more images (or take a photo) to see the model's top labels.")
    if run:
        predictor_for(run)  # load the model while the user picks images
    st.stop()


def pretrained_each(data: list[bytes]) -> list[dict]:
    from tl_core.images import ImageRejected
    out = []
    for item in data:
        try:
            out.append({"top_k": pretrained.top_k([item], top_k)[0]})
        except ImageRejected as exc:
            out.append({"error": str(exc)})
    return out


data = [i.getvalue() for i in images]
results = predictor_for(run).predict_each(data, top_k, tta=tta) if run else pretrained_each(data)
rows = []
for index, (image, result) in enumerate(zip(images, results)):
    if "error" in result:
        st.error(f"{image.name}: {result['error']}")
        continue
    top = result["top_k"]
    sure = top[0]["probability"] >= threshold
    rows.append({"image": image.name, "answer": top[0]["label"] if sure else "not sure",
                 **{f"top{i + 1}": p["label"] for i, p in enumerate(top)},
                 **{f"p{i + 1}": round(p["probability"], 4) for i, p in enumerate(top)}})
    if len(images) <= 12:
        left, right = st.columns([1, 2])
        left.image(image.getvalue(), width=200, caption=image.name)
        right.markdown(f"**{top[0]['label']}** ({top[0]['probability']:.1%})" if sure else
                       f"**not sure** (best guess {top[0]['label']}, {top[0]['probability']:.1%})")
        # plain bars, not a chart per image: many users predicting at once each redraw these on every upload
        for guess in top:
            right.progress(guess["probability"], text=f"{guess['label']}: {guess['probability']:.1%}")
        if run and right.toggle("Where did it look? (Grad-CAM)", key=f"predict_cam_{index}"):
            explanations.gradcam_view(run, image.getvalue(), top[0]["label"], key=f"predict_cam_{index}")
if rows:
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, key="predict_table")
    st.download_button("Download predictions (CSV)", table.to_csv(index=False), file_name=f"predictions-{run.id if run else 'pretrained'}.csv",
                       mime="text/csv", key="predict_csv")
