"""python -m pyfwd.cli: the pyfwd program."""

from pyfwd.cli.main import main

main()
