"""Every tool's --help ends with an example of its use."""

from __future__ import annotations

import pytest

from gadgets.tools import demo, replay, simulate, view, worker
from train import cli

TOOLS = [
    (simulate.main, "cardiomm-simulate"),
    (worker.main, "cardiomm-worker"),
    (replay.main, "cardiomm-replay"),
    (view.main, "cardiomm-view"),
    (cli.train_main, "cardiomm-train"),
    (cli.export_main, "cardiomm-export"),
    (cli.eval_main, "cardiomm-eval"),
    (demo.main, "python -m gadgets.tools.demo"),
]


@pytest.mark.parametrize("main, name", TOOLS, ids=[name for _, name in TOOLS])
def test_help_ends_with_an_example(main, name, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out.rstrip()
    tail = text[text.rindex("example"):]          # the last part of the help is the example section
    head, *rest = tail.splitlines()
    assert head.startswith("example")
    inline = head.split(":", 1)[1].strip() if ":" in head else ""  # "example: COMMAND" on one line
    commands = [line.strip() for line in ([inline] if inline else []) + rest]
    assert commands and all(line.startswith(("cardiomm-", "python -m", "torchrun")) for line in commands), tail
    assert any(line.startswith(name) for line in commands), tail
