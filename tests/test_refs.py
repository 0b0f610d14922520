"""Dataset references (``name`` / ``name@vN``): one parser, used by every reader, errors that quote the value."""

from __future__ import annotations

import re

import pytest

from tl_core.data import datasets
from tl_core.data.refs import DatasetRef, parse_ref
from tl_core.errors import TLError

from .factories import make_class_folders


def test_a_reference_reads_and_writes_both_forms():
    assert parse_ref("flowers") == DatasetRef("flowers") and str(DatasetRef("flowers")) == "flowers"
    assert parse_ref("flowers@v2") == DatasetRef("flowers", 2) and str(DatasetRef("flowers", 2)) == "flowers@v2"
    assert parse_ref(DatasetRef("flowers", 3)) == DatasetRef("flowers", 3)


@pytest.mark.parametrize("bad", ["d@v²", "d@v0", "d@", "@v2", "d@2", "d@vx", "d@v-1"])
def test_a_malformed_reference_is_refused_quoting_it_even_for_an_existing_dataset(tmp_path, bad):
    datasets.add_folder(make_class_folders(tmp_path / "src", per_class=2), "d")
    expected = re.escape(repr(bad)) + r".*NAME@vN"
    for read in (datasets.load_dataset, datasets.resolve_dataset):
        with pytest.raises(TLError, match=expected):
            read(bad)


def test_a_folder_whose_name_has_an_at_sign_is_still_imported(tmp_path):
    folder = make_class_folders(tmp_path / "shots@v2", per_class=2)
    imported = datasets.resolve_dataset(str(folder))
    assert imported.manifest["num_images"] == 4 and not imported.pinned
