"""Root-cause ranking evaluation harness (Train-Ticket fault cases; demo fault corpus hook)."""
