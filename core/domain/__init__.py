"""The retail domain every stage shares: table contracts, the product hierarchy, the column vocabulary."""
