"""Stage 02: customer features, eligibility, the three datasets and the scaled model matrix."""
