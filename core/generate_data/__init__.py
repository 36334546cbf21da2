"""Stage 01: synthetic order lines from personas, or a retailer's own log ingested."""
