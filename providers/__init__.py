"""Adapters to outside services (enrichment, SMS, voice, email, LLM) and the protection around every call."""
