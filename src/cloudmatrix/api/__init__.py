"""The OpenAI-compatible HTTP front end of the engine (FastAPI): `create_app(engine, ServerConfig(...))`."""
