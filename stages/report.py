"""DVC stage `report`: a thin entry point; `segbench report --help` lists its arguments."""

import sys

from segbench.cli import main

if __name__ == "__main__":
    main(["report", *sys.argv[1:]])
