import minari
import pytest

from promptrl.cli import main


def test_suites_table(capsys):
    assert main(["suites"]) == 0
    out = capsys.readouterr().out
    assert "| cheetah-vel | promptrl/CheetahVel-v0 | 40 | 35 | [2, 7, 15, 23, 26] | 200 |" in out


def test_data_command_is_idempotent(capsys):
    assert main(["data", "mw-reach", "--quality", "random", "--episodes", "1", "--tasks", "6"]) == 0
    assert "1 dataset(s) created, 0 reused" in capsys.readouterr().out
    assert minari.load_dataset("promptrl/mw-reach/task06-random-v0").total_episodes == 1
    assert main(["data", "mw-reach", "--quality", "random", "--episodes", "1", "--tasks", "6"]) == 0
    assert "0 dataset(s) created, 1 reused" in capsys.readouterr().out


def test_bad_arguments(capsys):
    assert main(["data", "mw-reach", "--tasks", "21"]) == 2
    assert "task must be an integer in [0, 20]" in capsys.readouterr().err
    assert main(["data", "mw-reach", "--episodes", "0", "--tasks", "6"]) == 2
    assert "episodes must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "cheetah-run"])
