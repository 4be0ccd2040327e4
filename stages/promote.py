"""DVC stage `promote`: a thin entry point; `segbench promote --help` lists its arguments."""

import sys

from segbench.cli import main

if __name__ == "__main__":
    main(["promote", *sys.argv[1:]])
