"""`royalty report`: one self-contained HTML page (plus PNG plots) explaining a run's values.

Modules, one job each: `load` reads and verifies the run (or one of its attributions),
`sources` finds and checks the image files, `stats` turns values into shares, top
contributors, histograms and the efficiency trace, `thumbs` makes inline thumbnails,
`charts` draws the PNG plots (matplotlib) and `svg` the small per-target charts,
`html` lays the page out, and `service` ties them together for the CLI.
"""
