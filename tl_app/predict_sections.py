"""The Predict page's sections: the model choice, the answer settings, and the uploads with their answers."""

from __future__ import annotations

from typing import Optional

import pandas as pd
import streamlit as st

from tl_core.data import datasets, inbox
from tl_core.errors import TLError
from tl_core.inference.answer_table import Answer, answer_rows, answers_csv, sort_results
from tl_core.inference.pretrained import PretrainedClassifier
from tl_core.inference.tta import MODES as TTA_MODES
from tl_core.runs import table
from tl_core.runs.scope import scope_for
from tl_core.runs.store import Run

from . import charts, explanations, monitor_sections, widgets
from .models import pick_pretrained, predictor_for
from .results_sections import pick_finished_run

MAX_CARDS = 12  # more images than this: the table instead of thumbnails
IMAGE_TYPES = ["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"]


def pick_model() -> tuple[Optional[Run], Optional[PretrainedClassifier], list[str]]:
    """(run, pretrained, class names): a finished run's model, or a pretrained classifier as it is (the other
    None). With no finished run to choose, the page stops with a link to Train."""
    source = st.radio("Model", ["Trained run", "Pretrained, no training"], horizontal=True, key="predict_source")
    if source == "Pretrained, no training":
        pretrained = pick_pretrained()
        return None, pretrained, pretrained.labels
    run = pick_finished_run(
        "predict_run",
        "No trained model yet. Train one on the Train page, then come back to try it on new "
        "images (or try a pretrained classifier as it is, above).",
        lambda r: f"{table.run_label(r)}, balanced {r.summary()['balanced_val_accuracy'] or 0:.3f}",
    )
    return run, None, run.artifacts.class_names()


def answer_settings(run: Optional[Run], num_classes: int) -> tuple[int, str, float]:
    """(top-k, test-time augmentation, "not sure" threshold); a pretrained classifier gets neither
    augmentation nor threshold."""
    top_k = st.slider("Top-k", 1, max(1, min(num_classes, 10)), min(3, num_classes), key="predict_topk")
    if not run:
        return top_k, "none", 0.0
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
    return top_k, tta, threshold


def unknown_setting(run: Optional[Run]) -> Optional[float]:
    """The share of validation images the "unknown" threshold keeps (None: the run has no scope, or a pretrained
    classifier): an image farther from the training images than that answers "unknown"."""
    scope = scope_for(run) if run else None
    if scope is None:
        if run:
            st.caption("This run was trained before 'unknown' answers existed: train it again to get them.")
        return None
    keep = st.slider(
        "Answer 'unknown' for images farther from the training images than this share of validation images",
        0.80,
        1.0,
        float(scope.keep),
        0.01,
        key="predict_unknown_keep",
        help="the nearest class is still shown; 1.0 keeps every image as far out as the farthest validation image",
    )
    st.caption(f"distance threshold {scope.threshold_for(keep):.3f} ({scope.method})")
    return keep


def view_options(run: Optional[Run]) -> tuple[bool, bool, bool]:
    """(camera on, as a table, explain). Drawn outside the uploads' fragment: an upload does not redraw
    them (a photo taken reruns the page, fragment included)."""
    left, middle, right = st.columns(3)
    use_camera = left.toggle("Use camera", key="predict_cam_on")
    as_table = middle.toggle("As a table", key="predict_as_table", help=f"always a table beyond {MAX_CARDS} images")
    explain = bool(run) and right.toggle("Where did it look? (Grad-CAM)", key="predict_explain")
    if use_camera:
        st.camera_input("Take a photo", key="predict_camera")
    return use_camera, as_table, explain


def pretrained_each(pretrained: PretrainedClassifier, data: list[bytes], top_k: int) -> list[dict]:
    """``predict_each``'s results for a pretrained classifier: one bad image does not sink the others."""
    from tl_core.data.images import ImageRejected

    out = []
    for item in data:
        try:
            out.append({"top_k": pretrained.top_k([item], top_k)[0]})
        except (ImageRejected, TLError) as exc:  # a bad image, or a model that fails when run
            out.append({"error": str(exc)})
    return out


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


def answer_caption(answer: Answer) -> str:
    """Markdown under a thumbnail: the answer in bold (or "not sure"), the runners-up, the file name."""
    top = answer.top
    guess = f"{widgets.md_escape(top[0]['label'])}, {top[0]['probability']:.1%}"
    if answer.unknown:
        best = f"**unknown**: not like the training images (nearest class {guess})"
    elif answer.sure:
        best = f"**{widgets.md_escape(top[0]['label'])}** {top[0]['probability']:.1%}"
    else:
        best = f"**not sure** (best guess {guess})"
    rest = " · ".join(f"{widgets.md_escape(g['label'])} {g['probability']:.1%}" for g in top[1:])
    return "  \n".join(part for part in (best, rest, widgets.md_escape(answer.name)) if part)


def _answers(answered: list[Answer], thumbs: Optional[list[bytes]]) -> None:
    """Thumbnails captioned with their answers, or (``thumbs`` None) the table of answers."""
    if thumbs is not None:
        # One element for every image and its answer: each upload redraws them all, for every user at once,
        # and each element costs the server a message (a card of columns and bars was ~10 of them).
        st.image(
            thumbs,
            output_format="JPEG",
            width=widgets.THUMBNAIL_WIDTH,
            caption=[answer_caption(answer) for answer in answered],
        )
        return
    st.dataframe(
        pd.DataFrame(answer_rows(answered)),
        hide_index=True,
        key="predict_table",
        column_config={
            f"p{i + 1}": st.column_config.ProgressColumn(f"p{i + 1}", min_value=0.0, max_value=1.0, format="percent")
            for i in range(len(answered[0].top))
        },
    )


def keep_for_labelling(run: Optional[Run], names: list[str], data: list[bytes]) -> None:
    """ "Keep these photos for labelling": the uploads go to a dataset's inbox (the run's own dataset first), each
    image once; the Inbox page suggests their classes."""
    known = [d.name for d in datasets.list_datasets()]
    if not known:
        return
    own = run.dataset_name if run else None
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    target = left.selectbox(
        "Inbox of dataset", known, index=known.index(own) if own in known else 0, key="predict_inbox_data"
    )
    if right.button("Keep these photos for labelling", key="predict_keep", icon=":material/inbox:"):
        try:
            report = inbox.add_bytes(
                target, list(zip(names, data)), source=f"predict:{run.id if run else 'pretrained'}"
            )
        except TLError as exc:
            st.error(widgets.md_escape(str(exc)))
            return
        st.success(
            widgets.md_escape(f"Kept {len(report.added)} photo(s) in the inbox of {target!r}")
            + (f" ({len(report.skipped)} already there or unusable)." if report.skipped else ".")
        )


@st.fragment
def uploads_and_answers(
    run: Optional[Run],
    pretrained: Optional[PretrainedClassifier],
    top_k: int,
    tta: str,
    threshold: float,
    options: tuple[bool, bool, bool],
    keep: Optional[float] = None,
) -> None:
    """The uploads and their answers, with ``run``'s model or else ``pretrained``; ``options`` as from
    ``view_options``. An upload reruns only this part: the choices above, the chart and the sidebar are not
    redrawn, and images seen before are neither decoded nor predicted again (many users share this server)."""
    use_camera, as_table, explain = options
    uploads = st.file_uploader("Images", accept_multiple_files=True, key="predict_files", type=IMAGE_TYPES)
    photo = st.session_state.get("predict_camera") if use_camera else None
    images = list(uploads or []) + ([photo] if photo else [])
    if not images:
        st.info("Upload one or more images (or take a photo) to see the model's top labels.")
        if run:
            predictor_for(run)  # load the model while the user picks images
        return
    data = [i.getvalue() for i in images]
    results = (
        predictor_for(run).predict_each(data, top_k, tta=tta, keep=keep)
        if run
        else pretrained_each(pretrained, data, top_k)
    )
    if run:  # each upload recorded once for monitoring (the page reruns with the same uploads)
        monitor_sections.record_answers(run, [image.file_id for image in images], results, tta)
    answered, refused = sort_results([image.name for image in images], results, threshold)
    for name, error in refused:
        st.error(widgets.md_escape(f"{name}: {error}"))
    if not answered:
        return
    cards = not as_table and len(images) <= MAX_CARDS
    _answers(answered, thumbnails(images, data, [a.index for a in answered]) if cards else None)
    st.download_button(
        "Download predictions (CSV)",
        lambda: answers_csv(answered),
        on_click="ignore",
        file_name=f"predictions-{run.id if run else 'pretrained'}.csv",
        mime="text/csv",
        key="predict_csv",
    )
    keep_for_labelling(run, [image.name for image in images], data)
    if explain:
        by_index = {answer.index: answer for answer in answered}
        picked = st.selectbox(
            "Image to explain",
            [None, *by_index],
            key="predict_cam_pick",
            format_func=lambda i: "choose an image" if i is None else by_index[i].name,
        )
        if picked is not None:
            explanations.gradcam_view(run, data[picked], by_index[picked].top[0]["label"], key="predict_cam")


BATCH_SOURCES = ["Zip upload", "Folder on the server"]
JOBS_SHOWN = 5


def batch_job(run: Optional[Run], top_k: int, tta: str) -> None:
    """Many images at once: a zip upload or a server folder (``TL_IMPORT_ROOTS``) predicted by a background
    job into a CSV, its progress and download below."""
    if not run:
        return
    from tl_core.inference import batch

    from .auth import current_user
    from .data_sections import import_roots

    # open while one of this run's jobs is queued or running: after a reload its progress stays in sight
    busy = any(job.listed_state in ("queued", "running") for job in _jobs_of(run))
    with st.expander("Many images: a zip or a server folder as a background job (CSV)", expanded=busy):
        source = st.radio("From", BATCH_SOURCES, horizontal=True, key="predict_batch_source")
        roots = import_roots()
        if source == "Zip upload":
            upload = st.file_uploader("Zip of images", type=["zip"], key="predict_batch_zip")
            ready = upload is not None
        else:
            if not roots:
                st.info(
                    "Server folders are off. An admin enables them with TL_IMPORT_ROOTS (folders separated by ':')."
                )
            folder = st.text_input("Folder on the server", key="predict_batch_folder", disabled=not roots)
            ready = bool(roots and folder.strip())
        if st.button("Start batch job", key="predict_batch_go", disabled=not ready, type="primary"):
            staged = None
            try:
                if source == "Zip upload":
                    staged = path = batch.stage_upload(upload)
                    name, allowed = upload.name, None
                else:
                    path, name, allowed = folder.strip(), None, roots
                job = widgets.backend().submit_predict(
                    run.root, path, None, top_k, tta, user=current_user(), allowed_roots=allowed, input_name=name
                )
                st.toast(f"Queued {job.id}")
            except TLError as exc:
                if staged is not None:  # no job will read it: not left behind in jobs/uploads/
                    batch.drop_staged(str(staged))
                st.error(widgets.md_escape(str(exc)))
        batch_jobs(run)


def _jobs_of(run: Run) -> list:
    return [job for job in widgets.backend().refresh_jobs() if job.spec().get("run_id") == run.id][:JOBS_SHOWN]


def batch_jobs(run: Run) -> None:
    """This run's latest prediction jobs, redrawn every 2 s while one is queued or running."""
    jobs = _jobs_of(run)
    if not jobs:
        return
    busy = any(job.listed_state in ("queued", "running") for job in jobs)
    st.fragment(_batch_jobs_body, run_every=2 if busy else None)([job.id for job in jobs])


def _batch_jobs_body(job_ids: list[str]) -> None:
    from tl_core.runs.jobs import job_by_id

    from .auth import current_user, may_cancel

    for job_id in job_ids:
        job = job_by_id(job_id)
        widgets.backend().check_alive(job)  # a job whose process died shows interrupted
        row = job.summary()
        st.markdown(f"**{widgets.md_escape(row['input'] or job.id)}**: {row['state']}")
        if row["state"] == "running" and row["total"]:
            st.progress(min(1.0, (row["done"] or 0) / row["total"]), text=f"{row['done']}/{row['total']} images")
        elif row["state"] == "finished":
            st.caption(widgets.md_escape(f"{row['message']}; {row['images_per_s']} images/s"))
            if job.out.is_file():
                st.download_button(
                    "Download predictions (CSV)",
                    lambda path=job.out: path.read_bytes(),
                    on_click="ignore",
                    file_name=f"predictions-{job.id}.csv",
                    mime="text/csv",
                    key=f"predict_batch_csv_{job.id}",
                )
        elif row["state"] in ("failed", "cancelled", "interrupted"):
            st.warning(widgets.md_escape(row["message"] or row["state"]))
        if row["state"] in ("queued", "running") and may_cancel(row["user"]):
            if st.button("Cancel", key=f"predict_batch_cancel_{job.id}"):
                try:
                    widgets.backend().cancel(job, user=current_user())
                except TLError as exc:
                    st.warning(widgets.md_escape(str(exc)))
