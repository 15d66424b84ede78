"""Remove the files DALI's autograph writes for conditional pipelines as soon as they are imported.

``@pipeline_def(enable_conditionals=True)`` converts the augmentation code with DALI's copy of TensorFlow's autograph,
which writes every converted function to ``<tmp>/__autograph_generated_file*.py``, imports it, and deletes it only in
an ``atexit`` hook (``nvidia/dali/_autograph/pyct/loader.py``, ``load_source``). Ray ends its worker processes without
running ``atexit`` (a finished trial's actor, a Train worker group torn down, a killed node), so each training process
left its files behind: thousands in a node's ``/tmp`` after a sweep. The file is read once, by the import that follows
its write; the source map autograph builds for error messages comes from the source text, not the file. So the file
is removed right after that import, in every process, whatever way it ends.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from nvidia.dali._autograph.pyct import loader

_REMOVES_FILE = "_nnunet_ray_removes_file"


def remove_generated_files() -> None:
    """Make DALI's autograph delete each generated module file once imported (idempotent)."""
    if getattr(loader.load_source, _REMOVES_FILE, False):
        return
    original = loader.load_source

    def load_source(source: str, delete_on_exit: bool) -> tuple[Any, str]:
        module, file_name = original(source, False)  # no atexit hook: the file is gone already
        with contextlib.suppress(OSError):
            os.remove(file_name)
        return module, file_name

    setattr(load_source, _REMOVES_FILE, True)
    loader.load_source = load_source  # load_ast looks it up in the module at each call
