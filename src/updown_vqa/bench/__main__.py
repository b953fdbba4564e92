"""`python -m updown_vqa.bench loader|train ...`: the loader and training benchmarks."""

from updown_vqa.bench.cli import main

main()
