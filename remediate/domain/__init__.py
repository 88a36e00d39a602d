"""The domain: models, settings, redaction; imports nothing else of the product."""
