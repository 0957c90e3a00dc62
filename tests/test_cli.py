"""The command line: bad arguments and files end with their message, not a traceback."""

import pytest

from sam_explain.cli import main


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_demo_runs(capsys):
    assert main(["demo", "--points", "2", "--box", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "sparse_prompt_embeddings     B x N' x C         = 2 x 4 x 256" in out
    assert "masks (logits)               B x 3 x 4H x 4W    = 2 x 3 x 256 x 256" in out


def test_bad_values_and_files_exit_with_their_message(tmp_path):
    with pytest.raises(SystemExit, match="sam-explain demo: need points >= 0 and batch B >= 1, got points = 1, B = 0"):
        main(["demo", "--batch", "0"])
    with pytest.raises(SystemExit, match="sam-explain demo: no checkpoint file at"):
        main(["demo", "--checkpoint", str(tmp_path / "absent.pth")])
