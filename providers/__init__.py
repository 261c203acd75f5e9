"""Adapters to outside services and the protection around every call.

Enrichment, SMS, voice, email and LLM adapters; rate limiting, circuit
breaking, retries and cost accounting.
"""
