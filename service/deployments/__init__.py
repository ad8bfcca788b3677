"""Deployments of fine-tunes at providers that serve them only once deployed (``Capabilities.needs_deployment``)."""
