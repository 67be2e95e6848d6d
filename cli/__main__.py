"""`python -m royalty.cli`: the same entry point as the `royalty` console script."""

from royalty.cli.app import main

if __name__ == "__main__":
    main()
