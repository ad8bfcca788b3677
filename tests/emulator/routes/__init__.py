"""HTTP routes, one module per OpenAI resource plus the emulator's own control endpoints."""
