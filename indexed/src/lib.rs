//! Megatron MMIDIDX .bin/.idx shards and GPT-NeoX's training sample index.
