"""Institution configuration: schema, operator policy, layering and rendering. Pure: no Flask, DB or network."""
