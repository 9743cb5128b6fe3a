"""The drops domain's HTTP side: the drops and feedback API for the web app, and signed event webhooks."""
