"""DVC stage `code`: a thin entry point; `segbench code --help` lists its arguments."""

import sys

from segbench.commands.code import main
from segbench.zygote import run_stage

if __name__ == "__main__":
    run_stage(main, sys.argv[1:])  # a forked warm process when one is up (segbench.zygote)
