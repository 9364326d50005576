"""Built-in use case: a customer-care chatbot (intents, FAQ answers, slot filling, hand-off)."""
