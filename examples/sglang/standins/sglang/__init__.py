"""Package root of the trimmed SGLang copy (stand-in: the upstream root imports the server front end)."""
