"""DVC stage `prepare`: a thin entry point; `segbench prepare --help` lists its arguments."""

import sys

from segbench.cli import main

if __name__ == "__main__":
    main(["prepare", *sys.argv[1:]])
