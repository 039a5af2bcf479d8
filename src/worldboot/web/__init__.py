"""Web app: blind human evaluation and interactive prediction."""
