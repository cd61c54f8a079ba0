"""The core of the torch side: helpers below models/ (logger, CLI flag names, YAML reading, demo assets, machine
facts, torch helpers, boxes, plots). They import deploy/ and each other only, never models/ or a wing."""
