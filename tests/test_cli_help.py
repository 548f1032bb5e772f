"""`dejavu --help`: every command says in one line what it does, from the stage declarations."""

import pytest

from dejavu.cli import main
from dejavu.config import BUILT_IN, choices
from dejavu.stages import COMMANDS, STAGE_BY_NAME, STAGES


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    # argparse wraps to the terminal's width; compare words, not line breaks.
    return " ".join(capsys.readouterr().out.split())


def test_every_stage_declares_a_one_line_description():
    for stage in STAGES:
        assert stage.description and "\n" not in stage.description and len(stage.description) <= 110, stage.name
        # A stage some configs skip says why in the log ("[train_B] not needed by this run (...)").
        assert bool(stage.unneeded) == (stage.applies is not None), stage.name


def test_top_level_help_names_every_command_with_its_stage_line(capsys):
    text = _help(capsys)
    for command, stages in COMMANDS.items():
        line = f"{command} {STAGE_BY_NAME[stages[0]].description}"
        assert " ".join(line.split()) in text, command
    for command in ("run", "sweep", "examples", "configs"):
        assert f" {command} " in text


@pytest.mark.parametrize("command", list(COMMANDS))
def test_stage_command_help_describes_it_and_its_outputs(command, capsys):
    text = _help(capsys, command)
    stage = STAGE_BY_NAME[COMMANDS[command][0]]
    assert " ".join(stage.description[1:].split()) in text
    for name in COMMANDS[command]:
        for output in STAGE_BY_NAME[name].outputs:
            assert output in text, (command, output)


def test_root_and_boxes_help_say_what_each_file_dataset_means(capsys):
    text = _help(capsys, "run")
    root = text.split("--root PATH", 2)[2].split("--boxes PATH", 1)[0]
    for dataset in choices("data.dataset"):
        if dataset not in BUILT_IN:  # generated: no files, no root
            assert f"{dataset}:" in root, dataset
    # README's manifest usage: --root the folder of its paths with --boxes the manifest, or --root the manifest.
    assert "--boxes naming the manifest" in root and "CSV/JSONL manifest itself" in root
    assert "--config NAME|FILE" in text and "dejavu configs" in text
