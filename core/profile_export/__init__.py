"""Stage 05: named, explained segment profiles, agent exports and the HTML report."""
