"""Pictures and pages of a run: mask overlays, validation curves, the HTML report."""
