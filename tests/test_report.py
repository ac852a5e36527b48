"""Every script's tables are written as strict JSON, CSV and markdown: a value a row does not have (NaN) is null
in the JSON and an empty cell elsewhere, never the bare NaN that JSON parsers reject."""
import json
import math

import pandas as pd

from ntm_core.report import report


def _reject(constant):
    raise ValueError(f"not JSON: {constant}")


def test_missing_values_are_null_and_empty_cells(tmp_path):
    df = pd.DataFrame([{"measure": "probe", "value": 0.5, "margin": math.nan, "n": 3},
                       {"measure": "likelihood", "value": 0.25, "margin": -1.5, "n": 4}])
    report(df, "a table", {"device": "cpu"}, str(tmp_path / "t"), digits=3,
           extra={"curve": [1.0, math.inf, math.nan], "fit": {"slope": math.nan}})
    data = json.loads((tmp_path / "t.json").read_text(), parse_constant=_reject)
    assert data["curve"] == [1.0, None, None] and data["fit"] == {"slope": None}
    assert data["rows"] == [{"measure": "probe", "value": 0.5, "margin": None, "n": 3},
                            {"measure": "likelihood", "value": 0.25, "margin": -1.5, "n": 4}]
    md = (tmp_path / "t.md").read_text().splitlines()
    assert md[4] == "| probe | 0.5 |  | 3 |" and md[5] == "| likelihood | 0.25 | -1.5 | 4 |"
    back = pd.read_csv(tmp_path / "t.csv")
    assert math.isnan(back["margin"][0]) and back["margin"][1] == -1.5


def test_committed_reports_are_strict_json():
    """What docs/ and assets/ ship is read by other tools (pandas, browsers, jq): none may hold a bare NaN."""
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    files = sorted(p for d in ("docs", "assets") for p in (root / d).rglob("*.json"))
    assert len(files) > 10  # the measured reports are there to check
    bad = []
    for p in files:
        try:
            json.loads(p.read_text(), parse_constant=_reject)
        except ValueError as e:
            bad.append(f"{p.relative_to(root)}: {e}")
    assert not bad, bad
