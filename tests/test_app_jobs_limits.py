"""What a visitor of the Train tab can reach: job ids only (no paths), zips checked before extraction, MNIST
folders from a fixed list, a cap on concurrent trainers, and one id per launch."""
import os
import zipfile

import pytest

from app import jobs as jobs_mod
from app.jobs import JobManager


@pytest.fixture
def manager(tmp_path, monkeypatch):
    monkeypatch.setenv("NTM_STUDIO_RUNS", str(tmp_path / "runs"))
    m = JobManager()
    yield m
    for job in m.running():
        try:
            m.cancel(job)
        finally:
            m._procs[job].kill()
            m._procs[job].wait()


def _launch(m, name="j", **kw):
    return m.launch(name=name, dataset=kw.pop("dataset", "shapes"), size="tiny (fast check)", steps=10,
                    objective="ntm", batch_size=4, **kw)


@pytest.mark.parametrize("job", ["../..", "/etc", "a/b", "..", "", None, "x" * 200])
def test_a_job_is_named_by_its_id_never_a_path(manager, job):
    for read in (manager.state, manager.metrics, manager.log_tail, manager.cancel):
        with pytest.raises(ValueError, match="no such job"):
            read(job)
    assert not manager.exists(job)


def test_zip_limits_are_checked_before_extraction(manager, tmp_path, monkeypatch):
    monkeypatch.setattr(jobs_mod, "ZIP_MAX_BYTES", 2**20)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.png", b"\0" * (4 * 2**20))  # 4 MiB of zeros: a few kB compressed
    assert bomb.stat().st_size < 50_000
    with pytest.raises(ValueError, match="expands to 4 MiB"):
        _launch(manager, dataset="imagefolder", upload=str(bomb))
    monkeypatch.setattr(jobs_mod, "ZIP_MAX_FILES", 3)
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as z:
        for i in range(5):
            z.writestr(f"{i}.txt", "x")
    with pytest.raises(ValueError, match="5 files; at most 3"):
        _launch(manager, dataset="imagefolder", upload=str(many))
    assert os.listdir(tmp_path / "runs") == [], "a refused launch leaves no job folder behind"
    assert manager.running() == []


def test_mnist_folder_comes_from_the_offered_list(manager, tmp_path, monkeypatch):
    data = tmp_path / "data" / "mnist"
    data.mkdir(parents=True)
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    monkeypatch.setenv("NTM_STUDIO_DATA", str(tmp_path / "data"))
    assert jobs_mod.data_folders() == {"data/mnist": str(data)}
    for path in ("/etc", str(data), "../../", "data/../.."):
        with pytest.raises(ValueError, match="pick a data folder from the list"):
            _launch(manager, dataset="mnist", data_root=path)


def test_concurrent_jobs_are_capped_and_ids_unique(manager, monkeypatch):
    monkeypatch.setenv("NTM_STUDIO_MAX_JOBS", "2")
    a = _launch(manager, name="same")
    b = _launch(manager, name="same")  # same name, same second
    assert a != b and {a, b} == set(manager.running())
    with pytest.raises(ValueError, match="2 training job\\(s\\) already running"):
        _launch(manager, name="third")
    assert "stopping" in manager.cancel(b) and manager.state(a).get("state") != "failed"
    manager._procs[b].wait(timeout=60)
    assert manager.running() == [a], "cancel stops the job it names, and frees its slot"
