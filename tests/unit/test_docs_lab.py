"""docs/lab.md stays true to the CLI: every `pyfwd ...` command it shows
names a real command with options that command has, and its config file
passes check-config."""

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from pyfwd.cli.main import cli

DOCS = Path(__file__).resolve().parents[2] / "docs"


def commands():
    """The pyfwd command lines in docs/lab.md's sh blocks (continuations
    joined), and those run through `pyfwd lab exec ... --`."""
    text = (DOCS / "lab.md").read_text()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if not line.startswith("pyfwd "):
                continue
            argv = shlex.split(line)[1:]
            if "--" in argv:                # lab exec NODE -- pyfwd ...
                inner = argv[argv.index("--") + 1:]
                argv = argv[:argv.index("--")]
                if inner[:1] == ["pyfwd"]:
                    out.append(inner[1:])
            out.append(argv)
    return out


def resolve(argv):
    """(the deepest command argv names, the options given to it)."""
    cmd, i = cli, 0
    while i < len(argv) and hasattr(cmd, "commands"):
        if argv[i].startswith("-"):     # a group's option and its value
            i += 2 if argv[i] in ("-s", "--socket") else 1
            continue
        assert argv[i] in cmd.commands, f"no command {argv[i]!r}: {argv}"
        cmd, i = cmd.commands[argv[i]], i + 1
    return cmd, [a.split("=")[0] for a in argv[i:] if a.startswith("-")]


def test_every_command_in_the_course_exists_with_its_options():
    found = commands()
    assert len(found) > 20
    for argv in found:
        cmd, opts = resolve(argv)
        names = {n for p in cmd.params for n in getattr(p, "opts", [])}
        for opt in opts:
            assert opt in names, f"{' '.join(argv)}: {cmd.name} has no {opt}"


def test_the_course_config_is_valid():
    r = CliRunner().invoke(cli, ["check-config",
                                 str(DOCS / "lab" / "course.toml")])
    assert r.exit_code == 0, r.output
    assert "1 VIP(s), 2 real server(s)" in r.output
