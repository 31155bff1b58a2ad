"""The model: client, tokens, context windows, prices, prompts and the metered call."""
