"""What tests and benchmarks share: the scripted LLM server (`fake_llm`) and the real
servers they run against (`servers`). Product code never imports it."""
