"""python -m pyfwd.cli: the pyfwd program."""

from .main import main

main()
