"""DVC stage `sweep`: a thin entry point; `segbench sweep --help` lists its arguments."""

import sys

from segbench.commands.sweep import main

if __name__ == "__main__":
    main(sys.argv[1:])
