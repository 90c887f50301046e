"""Export: steering vectors to and from other tools (`llama_cpp`: llama.cpp control vectors)."""
