"""DVC stage `promote`: a thin entry point; `segbench promote --help` lists its arguments."""

import sys

from segbench.commands.promote import main

if __name__ == "__main__":
    main(sys.argv[1:])
