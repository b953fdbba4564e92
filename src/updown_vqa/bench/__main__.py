"""`python -m updown_vqa.bench loader|train ...`: the loader and training benchmarks."""

from updown_vqa.bench.loader import main

main()
