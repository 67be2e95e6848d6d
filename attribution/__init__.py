"""From owner-tagged images to values, in the order a run goes through them.

    data/      the image folders and targets, validated; files → model input
    model/     the diffusion model a run trains and its training loss
    engine/    one optimizer step's values: per-layer rules, captures, dot paths, HVPs
    training/  the run: config, warm-up and valued steps, devices, checkpoints, values table
    contract/  the run folder on disk (no torch): what payout and report read
    after/     after training: values for new targets, generated images, a finished run read back
    audit/     the values checked against retraining Shapley

payout (`royalty.payout`) and report (`royalty.report`) come next, reading runs through
`contract/` only.
"""
