"""DVC stage `report`: a thin entry point; `segbench report --help` lists its arguments."""

import sys

from segbench.commands.report import main

if __name__ == "__main__":
    main(sys.argv[1:])
