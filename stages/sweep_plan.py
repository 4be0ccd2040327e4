"""DVC stage `sweep_plan`: a thin entry point; `segbench sweep-plan --help` lists its arguments."""

import sys

from segbench.commands.sweep_plan import main

if __name__ == "__main__":
    main(sys.argv[1:])
