"""`python -m updown_vqa.features.bench_extract`: the extraction benchmark, now `updown_vqa.bench.extraction`."""

from updown_vqa.bench.extraction import main

if __name__ == "__main__":
    main()
