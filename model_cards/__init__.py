"""Model-card templates and the family cards, shipped inside the package as ``growres.model_cards``."""
