"""Training again with a run's settings on a newer version of its dataset (the inbox or Monitoring closing the
loop): the run's ``config.json`` as it is, its dataset pinned at the version asked for (the latest by default),
so the new run records exactly which images it learnt from."""

from __future__ import annotations

import dataclasses
from typing import Optional

from tl_core.data.datasets import load_dataset
from tl_core.data.refs import DatasetRef, parse_ref
from tl_core.models.config import TrainConfig
from tl_core.runs.store import Run


def config_again(run: Run, dataset: Optional[str] = None) -> TrainConfig:
    """``run``'s settings on ``dataset`` (a name, ``name@vN``; default: the run's own dataset), at its latest
    version unless one is named."""
    ref = parse_ref(dataset or run.dataset_name)
    version = ref.version if ref.version is not None else load_dataset(ref.name).version
    load_dataset(str(DatasetRef(ref.name, version)))  # a version that does not exist is refused, quoted
    return dataclasses.replace(run.config, data=str(DatasetRef(ref.name, version)))
