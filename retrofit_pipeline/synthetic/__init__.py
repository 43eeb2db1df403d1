"""The data engine: queries for a user's passages from an LLM behind the OpenAI-compatible
chat-completions API (vLLM, llama.cpp's server, Ollama, TGI, `transformers serve`), cached by
content, filtered, and turned into training pairs of their own task types
(synthetic_question, synthetic_keywords, synthetic_cross_lingual). No Dagster import here: the
asset is dagster_defs/assets/synthetic.py. See docs/DATA_ENGINE.md."""
