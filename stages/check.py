"""DVC stage `check`: a thin entry point; `segbench check --help` lists its arguments."""

import sys

from segbench.commands.check import main
from segbench.zygote import run_stage

if __name__ == "__main__":
    run_stage(main, sys.argv[1:])  # a forked warm process when one is up (segbench.zygote)
