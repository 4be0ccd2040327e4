"""DVC stage `sweep`: a thin entry point; `segbench sweep --help` lists its arguments."""

import sys

from segbench.cli import main

if __name__ == "__main__":
    main(["sweep", *sys.argv[1:]])
