"""Predict: classify uploaded or camera images with a finished run's model, and see where it looked."""
import pandas as pd
import streamlit as st

from tl_app import explanations, shell, widgets
from tl_app.models import predictor_for

shell.guard()

st.title("Predict")
finished = [r for r in widgets.backend().refresh() if r.listed_state == "finished" and r.artifacts.has_model()]
if not finished:
    widgets.stop_with("No trained model yet. Train one on the Train page, then come back to try it on new images.",
                 "pages/train.py", "Go to Train")

by_id = {r.id: r for r in finished}
run_id = st.selectbox("Model (finished run)", list(by_id), key="predict_run",
                      format_func=lambda rid: f"{rid} — val acc {by_id[rid].artifacts.metrics().get('val_accuracy', 0):.3f}")
run = by_id[run_id]
num_classes = len(run.artifacts.class_names())
top_k = st.slider("Top-k", 1, max(1, num_classes), min(3, num_classes), key="predict_topk")
uploads = st.file_uploader("Images", accept_multiple_files=True, key="predict_files",
                           type=["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"])
photo = st.camera_input("Or take a photo", key="predict_camera") if st.toggle("Use camera", key="predict_cam_on") \
    else None
images = list(uploads or []) + ([photo] if photo else [])
if not images:
    st.info("Upload one or more images (or take a photo) to see the model's top labels.")
    predictor_for(run)  # load the model while the user picks images
    st.stop()

predictor = predictor_for(run)
rows = []
for index, (image, result) in enumerate(zip(images, predictor.predict_each([i.getvalue() for i in images], top_k))):
    if "error" in result:
        st.error(f"{image.name}: {result['error']}")
        continue
    top = result["top_k"]
    rows.append({"image": image.name, **{f"top{i + 1}": p["label"] for i, p in enumerate(top)},
                 **{f"p{i + 1}": round(p["probability"], 4) for i, p in enumerate(top)}})
    if len(images) <= 12:
        left, right = st.columns([1, 2])
        left.image(image.getvalue(), width=200, caption=image.name)
        right.markdown(f"**{top[0]['label']}** ({top[0]['probability']:.1%})")
        # plain bars, not a chart per image: many users predicting at once each redraw these on every upload
        for guess in top:
            right.progress(guess["probability"], text=f"{guess['label']}: {guess['probability']:.1%}")
        if right.toggle("Where did it look? (Grad-CAM)", key=f"predict_cam_{index}"):
            explanations.gradcam_view(run, image.getvalue(), top[0]["label"], key=f"predict_cam_{index}")
if rows:
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, key="predict_table")
    st.download_button("Download predictions (CSV)", table.to_csv(index=False), file_name=f"predictions-{run.id}.csv",
                       mime="text/csv", key="predict_csv")
