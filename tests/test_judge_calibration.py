"""dlib as a judge of real faces: face_recognition's own test photos (three of one person, one of
another), fetched from the package index at set-up; skipped, with the reason, where it cannot be
reached. The figures it measures are shipped in artifacts/calibration/dlib.json."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

# The source distribution whose tests/test_images are the photos, pinned by content.
SDIST = "face_recognition-1.3.0.tar.gz"
SDIST_SHA256 = "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec"
PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")


@pytest.fixture(scope="module")
def real_faces(tmp_path_factory) -> Path:
    pytest.importorskip("dlib", reason="dlib is not installed (pip install dlib-bin)")
    where = tmp_path_factory.mktemp("sdist")
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "face_recognition==1.3.0", "--no-deps",
             "--no-binary", ":all:", "-q", "-d", str(where)],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"the package index cannot be reached to fetch {SDIST} ({type(exc).__name__})")
    sdist = where / SDIST
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() == SDIST_SHA256, "not the pinned sdist"
    photos = tmp_path_factory.mktemp("faces")
    with tarfile.open(sdist) as tar:
        for name in PHOTOS:
            member = tar.getmember(f"face_recognition-1.3.0/tests/test_images/{name}")
            (photos / name).write_bytes(tar.extractfile(member).read())
    return photos


@pytest.mark.slow  # dlib on four photos and their noise cloaks at three budgets (the shipped
# figures add RGB PGD and the colour-space cloak: python -m anti_i2v.experiments.judge_calibration)
def test_dlib_separates_real_people_and_a_delta_e_3_cloak_barely_moves_it(real_faces, tmp_path):
    from anti_i2v.experiments.judge_calibration import calibrate

    result = calibrate(
        real_faces,
        tmp_path / "dlib.json",
        "tiny:svd",
        (2, 4, 8),
        1,
        tmp_path / "w",
        256,
        ("random-noise",),
    )
    assert len(result["same_person"]) == 3 and len(result["different_person"]) == 3
    assert result["separates"] and min(result["same_person"]) > max(result["different_person"])
    for method, found in result["cloaks"].items():
        change = found["score_change_at_delta_e_3"]
        assert change is not None and 0 <= change < 1, method  # 1 - cosine of unit descriptors
    assert (tmp_path / "dlib.json").is_file()
