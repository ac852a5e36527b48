"""The layering the README's layout states: ntm_core imports neither the app nor the analysis scripts, and the app
does not import the analysis scripts (the evaluator both use lives in ntm_core.data). A module that breaks it fails
here with its file and line."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported(path: pathlib.Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, package
    return [f"{p.relative_to(ROOT)}:{line} imports {name}" for p in files for line, name in imported(p)
            if name.split(".")[0] in forbidden]


def test_the_library_imports_no_app_and_no_analysis():
    assert offenders("ntm_core", ("app", "analysis")) == []


def test_the_app_imports_no_analysis_script():
    assert offenders("app", ("analysis",)) == []


def test_the_check_can_fail():
    assert offenders("analysis", ("ntm_core",)), "the analysis scripts do import the library"


def test_the_analysis_scripts_import_no_app():
    assert offenders("analysis", ("app",)) == []


def test_each_endpoints_gpu_duration_covers_its_measured_worst_case():
    """app.widgets.GPU_SECONDS (ZeroGPU's duration per endpoint) against docs/worst-case-requests.json, the largest
    allowed request of each endpoint timed on the CPU: a slower endpoint must raise its budget with its table."""
    import json

    from app.widgets import GPU_SECONDS

    rows = json.loads((ROOT / "docs" / "worst-case-requests.json").read_text())["rows"]
    assert rows
    for row in rows:
        endpoint = row["request"].split(":")[0]
        assert endpoint in GPU_SECONDS, row
        assert row["seconds"] <= GPU_SECONDS[endpoint], (row, GPU_SECONDS[endpoint])
