"""The run-folder contract: file names, the manifest, every integrity check. No torch: payout and report read runs through it."""
