"""Step-Audio 2 LLM side: config, tokens, prompt format, audio encoder, vLLM plugin, engines."""
