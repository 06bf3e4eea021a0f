"""The command's advice works when followed: a path inside a run names the run; counts read well."""

from __future__ import annotations

import json

import pytest

from numpyvae.app.runfolder import CONFIG_FILE, RunNotFoundError, read_config
from numpyvae.app.runfolder import check_new as check_new_run


def _run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / CONFIG_FILE).write_text(json.dumps({}))
    (run / "model.npz").write_bytes(b"")
    return run


@pytest.mark.parametrize("inside", ["figures", "model.npz"])
def test_a_path_inside_a_run_names_the_run_folder(tmp_path, inside):
    run = _run_folder(tmp_path)
    with pytest.raises(RunNotFoundError) as err:
        read_config(run / inside)
    message = str(err.value)
    assert f"inside the run folder {run}" in message and "numpyvae train --out" not in message


def test_a_folder_that_is_not_a_run_gets_no_command_that_would_fail(tmp_path):
    with pytest.raises(RunNotFoundError) as err:
        read_config(tmp_path)
    assert "is not a run folder (no config.json)" in str(err.value)
    assert f"--out {tmp_path}" not in str(err.value)  # training there would not make it a run


def test_a_held_run_says_how_to_continue_it_from_the_command_line(tmp_path):
    run = _run_folder(tmp_path)
    with pytest.raises(ValueError) as err:
        check_new_run(run)
    assert f"numpyvae train --out {run} --resume" in str(err.value)
    assert "(resume=True)" not in str(err.value)
