"""Shared helpers of the XRD experiments: data paths and the results.json updater."""

from __future__ import annotations

import json
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = pathlib.Path(os.environ.get("DIFCRYS_DATA", ROOT.parent / "shared" / "data")).resolve()
RESULTS = HERE / "results.json"


def update_results(section: str, payload: dict) -> None:
    """Merge ``payload`` under ``section`` of results.json, recording the command that produced it."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    payload = dict(payload)
    payload["command"] = "python " + " ".join([str(pathlib.Path(sys.argv[0]).resolve().relative_to(ROOT))]
                                              + sys.argv[1:])
    data[section] = payload
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
