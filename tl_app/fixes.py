"""Fixing a dataset from the pages: per-image choices (keep, exclude, move to a class) collected per user
and dataset, then saved together as a new dataset version (``tl_core.data.versions``)."""

from __future__ import annotations

import streamlit as st

from tl_core.data import versions
from tl_core.errors import TLError

from .auth import current_user
from .widgets import md_escape


def pending(dataset: str) -> dict:
    """This user's unsaved fixes to ``dataset``: {"move": {path: class}, "exclude": set of paths}."""
    return st.session_state.setdefault("dataset_fixes", {}).setdefault(dataset, {"move": {}, "exclude": set()})


def _apply(dataset: str, path: str, key: str) -> None:
    fixes, choice = pending(dataset), st.session_state[key]
    fixes["exclude"].discard(path)
    fixes["move"].pop(path, None)
    if choice == "exclude":
        fixes["exclude"].add(path)
    elif choice.startswith("move to "):
        fixes["move"][path] = choice.removeprefix("move to ")


def fix_select(dataset: str, path: str, label: str, classes: list[str], key: str, suggested: str | None = None) -> None:
    """One image's fix: keep, exclude, or move to another class (the suggested one listed first). Only a change
    of this widget changes the pending fixes: the same image can be listed twice (say, mislabelled and outlier)."""
    fixes = pending(dataset)
    others = sorted((c for c in classes if c != label), key=lambda c: c != suggested)
    options = ["keep", "exclude"] + [f"move to {c}" for c in others]
    current = (
        "exclude"
        if path in fixes["exclude"]
        else (f"move to {fixes['move'][path]}" if path in fixes["move"] else "keep")
    )
    st.selectbox(
        "Fix",
        options,
        index=options.index(current) if current in options else 0,
        key=key,
        label_visibility="collapsed",
        on_change=_apply,
        args=(dataset, path, key),
    )


def save_bar(dataset: str, key: str) -> None:
    """What is pending, and the button that saves it as the dataset's next version. A save reruns the page, so
    everything drawn above (the version, its list, the suspects) is of the new version."""
    saved_message = st.session_state.pop(f"{key}_saved", None)
    if saved_message:
        st.success(saved_message)
    fixes = pending(dataset)
    count = len(fixes["move"]) + len(fixes["exclude"])
    if not count:
        st.caption(
            "No fixes pending. Choose 'exclude' or 'move to …' beside an image, then save them as a new "
            "version of the dataset (the current version and its runs stay as they are)."
        )
        return
    st.info(
        f"{count} fix(es) pending for {dataset!r}: {len(fixes['move'])} to move, {len(fixes['exclude'])} to exclude."
    )
    note = st.text_input("Note for the new version", key=f"{key}_note")
    if st.button("Save as a new version", type="primary", key=f"{key}_save"):
        try:
            saved = versions.save_version(dataset, fixes["move"], fixes["exclude"], note, user=current_user())
        except TLError as exc:
            st.error(md_escape(str(exc)))
            return
        st.session_state["dataset_fixes"].pop(dataset, None)
        st.session_state[f"{key}_saved"] = md_escape(
            f"Saved {dataset!r} version {saved.version} ({saved.manifest['num_images']} images). Runs "
            "trained from now on use it; earlier runs keep theirs."
        )
        st.rerun()
